"""Reads the HDX event stream the way HDX's consumers do (hdx-redis-lib's RedisEventBus): a
consumer group created at the start of the stream, XREADGROUP, then json.loads(body), XACK.

usage: stream_consumer.py REDIS_URL [--stream S] [--group G] [--consumer C] --count N [--timeout S]

Prints a JSON list of {"id", "event_type", "body"} (body parsed) once N events were read, or
fails when fewer arrived within the timeout.
"""
import argparse
import json
import sys
import time

from redis import Redis
from redis.exceptions import ResponseError


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--stream", default="hdx_event_stream")
    parser.add_argument("--group", default="default_group")
    parser.add_argument("--consumer", default="consumer-1")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=20)
    opts = parser.parse_args()

    redis = Redis.from_url(opts.url)
    try:
        redis.xgroup_create(opts.stream, opts.group, id="0", mkstream=True)
    except ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise
    events = []
    deadline = time.time() + opts.timeout
    while len(events) < opts.count and time.time() < deadline:
        result = redis.xreadgroup(
            groupname=opts.group, consumername=opts.consumer,
            streams={opts.stream: ">"}, block=500, count=1,
        )
        if not result:
            continue
        _stream, entries = result[0]
        for entry_id, data in entries:
            fields = {k.decode("utf-8"): v.decode("utf-8") for k, v in data.items()}
            events.append({
                "id": entry_id.decode("utf-8"),
                "event_type": fields.get("event_type"),
                "body": json.loads(fields["body"]),
            })
            redis.xack(opts.stream, opts.group, entry_id)
    if len(events) < opts.count:
        print(f"only {len(events)} of {opts.count} events within {opts.timeout} s", file=sys.stderr)
        return 1
    print(json.dumps(events))
    return 0


if __name__ == "__main__":
    sys.exit(main())
