"""The Python side of benches/analytics.rs: enqueues analytics jobs exactly as the old Flask API
did (`enqueue_call(func=send_event_task, args=[event_arguments], timeout=...)`, RQ's default
pickle serializer), in pipelines of 1,000 so enqueueing is quick.

usage: analytics_bench.py REDIS_URL --jobs N --arguments JSON
"""
import argparse
import json

from redis import Redis
from rq import Queue

FUNC = "analyticsapi.tasks.send_event.send_event_task"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--arguments", required=True)
    opts = parser.parse_args()
    queue = Queue("analytics_q", connection=Redis.from_url(opts.url))
    arguments = json.loads(opts.arguments)
    done = 0
    while done < opts.jobs:
        batch = min(1000, opts.jobs - done)
        queue.enqueue_many(
            [Queue.prepare_data(FUNC, args=[arguments], timeout=180) for _ in range(batch)]
        )
        done += batch


if __name__ == "__main__":
    main()
