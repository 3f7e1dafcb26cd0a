"""Drive rq-dashboard's JSON endpoints in-process (Flask test client, no port).

usage: dashboard_probe.py REDIS_URL QUEUE [--json] [--extra] [--check-data] [--job ID]...

Prints {registry: {"status": code, "ids": [...]}, ..., "jobs": {id: {"status": code,
"job_status": ...}}}; entries of a 5xx response also carry "error" (the exception raised in
the view). --json makes the dashboard use rq's JSONSerializer (its CLI flag -j); the default is
rq's DefaultSerializer (pickle). --extra also probes /0/data/queues.json and workers.json.
When a list itself fails (5xx) its ids are read from Redis instead ("ids_from_redis": true) so
each job's detail is still probed; --job adds ids to probe. The dashboard never deserializes a
job's `data` (func/args): --check-data also does Job.fetch(id).args with the same serializer
and records "data": "ok" or the error (an error there also fails the probe).
Exit status: 0 when every response is < 500, 1 otherwise, 2 if the probe itself raised.

Needs a venv with rq-dashboard whose rq it supports: 0.7.1.2 needs rq < 2.0 (e.g. rq 1.13) plus
six; 0.9.0 works with rq 2.12 (plus six). Both URL layouts are handled.
"""
import argparse
import json
import sys
import traceback

KEYS = {"queued": "rq:queue:%s", "started": "rq:wip:%s", "finished": "rq:finished:%s",
        "failed": "rq:failed:%s", "deferred": "rq:deferred:%s", "scheduled": "rq:scheduled:%s",
        "canceled": "rq:canceled:%s"}
REGISTRIES = ["queued", "started", "finished", "failed", "deferred", "scheduled", "canceled"]
PER_PAGE = 100


def make_app(redis_url):
    from rq_dashboard.cli import make_flask_app
    from rq_dashboard.web import setup_rq_connection

    # make_flask_app(config_module, username, password, url_prefix): default settings + blueprint.
    app = make_flask_app(None, None, None, "")
    app.config["RQ_DASHBOARD_REDIS_URL"] = redis_url
    setup_rq_connection(app)  # what the CLI does before app.run()
    return app


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("queue")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--extra", action="store_true")
    parser.add_argument("--check-data", action="store_true")
    parser.add_argument("--job", action="append", default=[])
    opts = parser.parse_args()

    import rq_dashboard.web as web
    from flask import got_request_exception

    if opts.json:
        from rq.serializers import JSONSerializer
        web.config.serializer = JSONSerializer

    app = make_app(opts.url)
    errors = []
    # With PROPAGATE_EXCEPTIONS off the test client gets the real 500; the signal tells us why.
    got_request_exception.connect(
        lambda sender, exception, **kw: errors.append(
            "%s.%s: %s" % (type(exception).__module__, type(exception).__name__, exception)),
        app, weak=False)
    client = app.test_client()
    # 0.7.x: /<n>/data/jobs/<queue>/<registry>/<per_page>/<page>.json;
    # 0.8.x/0.9.x add an <order> segment (asc|dsc) before <page>.
    has_order = any("<order>" in r.rule for r in app.url_map.iter_rules() if "/data/jobs/" in r.rule)
    list_url = "/0/data/jobs/%s/%s/%d/asc/1.json" if has_order else "/0/data/jobs/%s/%s/%d/1.json"
    failed = False

    def get(url):
        nonlocal failed
        del errors[:]
        resp = client.get(url)
        body = resp.get_json(silent=True)
        entry = {"status": resp.status_code}
        if resp.status_code >= 500:
            failed = True
            entry["error"] = errors[-1] if errors else resp.get_data(as_text=True)[:300]
        return entry, body

    out = {}
    listed = []
    for registry in REGISTRIES:
        entry, body = get(list_url % (opts.queue, registry, PER_PAGE))
        ids = [j["id"] for j in (body or {}).get("jobs", [])]
        if entry["status"] >= 500:
            from redis import Redis
            redis = Redis.from_url(opts.url)
            key = KEYS[registry] % opts.queue
            raw = redis.lrange(key, 0, -1) if registry == "queued" else redis.zrange(key, 0, -1)
            # rq 2.x's started registry holds "<job id>:<execution id>"
            ids = [r.decode().split(":")[0] for r in raw]
            entry["ids_from_redis"] = True
        entry["ids"] = ids
        listed += [i for i in ids if i not in listed]
        out[registry] = entry
    listed += [i for i in opts.job if i not in listed]
    jobs = {}
    for job_id in listed:
        entry, body = get("/0/data/job/%s.json" % job_id)
        entry["job_status"] = (body or {}).get("status")
        if opts.check_data:
            from redis import Redis
            from rq.job import Job
            try:
                job = Job.fetch(job_id, connection=Redis.from_url(opts.url), serializer=web.config.serializer)
                job.args
                entry["data"] = "ok"
            except Exception as e:
                cause = e.__cause__ or e
                entry["data"] = "%s.%s: %s" % (type(cause).__module__, type(cause).__name__, cause)
                failed = True
        jobs[job_id] = entry
    out["jobs"] = jobs
    if opts.extra:
        for name in ("queues", "workers"):
            entry, body = get("/0/data/%s.json" % name)
            entry["body"] = body
            out["_" + name] = entry
    print(json.dumps(out, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        sys.exit(2)
