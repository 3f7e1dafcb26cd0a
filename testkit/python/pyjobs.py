"""Python job functions for interop tests: what a Python RQ worker runs."""


def add(a, b):
    return a + b


def noop():
    return None


def fail(message):
    raise ValueError(message)


def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}
