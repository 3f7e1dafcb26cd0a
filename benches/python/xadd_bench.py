"""The Python side of benches/events.rs: how fast hdx-redis-lib's way of pushing events goes
(one `XADD stream MAXLEN ~ 50000 * event_type T body json.dumps(event)` per event, as
`HDXWriteOnlyRedisEventBus.push_hdx_event` does), with redis-py.

usage: xadd_bench.py REDIS_URL --events N --body-file F   -> prints "events/s"
"""
import argparse
import json
import time

from redis import Redis


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--body-file", required=True)
    opts = parser.parse_args()
    redis = Redis.from_url(opts.url)
    with open(opts.body_file) as f:
        events = json.load(f)
    start = time.perf_counter()
    for i in range(opts.events):
        event = events[i % len(events)]
        redis.xadd("py_event_stream",
                   {"event_type": event["event_type"], "body": bytes(json.dumps(event), "utf-8")},
                   maxlen=50_000)
    print(opts.events / (time.perf_counter() - start))


if __name__ == "__main__":
    main()
