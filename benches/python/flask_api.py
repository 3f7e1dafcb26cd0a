"""The old service's enqueue endpoints, as its Flask app implemented them (enqueue with rq,
answer JSON), for benches/http.rs to measure under gunicorn beside hdx-jobs-server.

Run: REDIS_URL=redis://127.0.0.1:6379/13 gunicorn -w 2 -b 127.0.0.1:PORT flask_api:app
"""
import os

from flask import Flask, jsonify, request
from redis import Redis
from rq import Queue

app = Flask(__name__)
redis = Redis.from_url(os.environ["REDIS_URL"])
geo_q = Queue("geo_q", connection=redis)
analytics_q = Queue("analytics_q", connection=redis)
event_q = Queue("event_q", connection=redis)


@app.route("/api/add-layer/dataset/<string:dataset_id>/resource/<string:resource_id>", methods=["GET"])
def add_layer(dataset_id, resource_id):
    data_dict = {"state": "processing", "message": "The processing of the geo-preview has started",
                 "layer_id": "None", "error_type": "None", "error_class": "None"}
    task_arguments = {
        "dataset_id": dataset_id, "resource_id": resource_id,
        "download_url": request.args["resource_download_url"], "url_type": request.args.get("url_type", "api"),
        "download_chunk_size": 5 * 1024 * 1024, "max_file_size_mb": 300 * 1024 * 1024, "timeout_sec": 120,
        "ckan_api_base_url": "http://ckan:5000/api/action", "resource_update_action": "hdx_resource_update_metadata",
        "gis_api_pattern": "http://gisapi/services/tables/{table_name}", "table_name_prefix": "pre",
        "tmp_download_directory": "/tmp", "ckan_server_url": "data.humdata.org", "verify_ckan_ssl": True,
        "hdx_user_agent": "GISLAYER",
    }
    geo_q.enqueue_call(func="importapi.tasks.create_preview.create_preview_task", args=[task_arguments], timeout=180)
    return jsonify(data_dict)


@app.route("/api/send-analytics", methods=["POST"])
def send_analytics():
    analytics_q.enqueue_call(func="analyticsapi.tasks.send_event.send_event_task", args=[request.get_json()],
                             timeout=180)
    return jsonify({"success": True})


@app.route("/api/create-change-events", methods=["POST"])
def create_change_events():
    # The old eventapi view: the body goes to detect_changes as it came.
    event_q.enqueue_call(func="eventapi.tasks.detect_changes.detect_changes", args=[request.get_json()],
                         timeout=180)
    return jsonify({"state": "success"})
