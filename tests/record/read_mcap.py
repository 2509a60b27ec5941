#!/usr/bin/env python3
"""Reads coxswain recordings with PyPI's `mcap` package (written by Foxglove, not by us) and prints what it
saw as one JSON object on stdout. Used by runtime/tests/record.rs as an independent reader.

    read_mcap.py FILE.mcap [FILE.mcap ...]

Checks, failing with a message on stderr and exit status 1:
- each file has a summary (a complete file) and its CRCs are valid;
- every channel's message encoding is `json`, its schema encoding `jsonschema`, its schema parses as JSON;
- every message decodes as JSON (non-finite floats are the strings "NaN", "Infinity", "-Infinity").

Prints: files, per-topic {count, schema_name, first_log_time_ns, last_log_time_ns, last (the last message,
decoded)}, metadata {name: [records]}, nonfinite_strings (how many "NaN"/"Infinity"/"-Infinity" strings
the messages held), and the sum of the `tick` field over /coxswain/tick.
"""
import json
import sys

from mcap.reader import make_reader

NONFINITE = {"NaN", "Infinity", "-Infinity"}


def fail(msg):
    print(f"read_mcap.py: {msg}", file=sys.stderr)
    sys.exit(1)


def count_nonfinite(value):
    if isinstance(value, str):
        return 1 if value in NONFINITE else 0
    if isinstance(value, list):
        return sum(count_nonfinite(v) for v in value)
    if isinstance(value, dict):
        return sum(count_nonfinite(v) for v in value.values())
    return 0


def main(paths):
    topics = {}
    metadata = {}
    nonfinite = 0
    tick_sum = 0
    for path in paths:
        with open(path, "rb") as f:
            reader = make_reader(f, validate_crcs=True)
            summary = reader.get_summary()
            if summary is None:
                fail(f"{path}: no summary section (incomplete file?)")
            for channel in summary.channels.values():
                schema = summary.schemas.get(channel.schema_id)
                if channel.message_encoding != "json":
                    fail(f"{path}: {channel.topic}: message encoding {channel.message_encoding!r}")
                if schema is None or schema.encoding != "jsonschema":
                    fail(f"{path}: {channel.topic}: schema encoding {schema and schema.encoding!r}")
                try:
                    json.loads(schema.data)
                except ValueError as e:
                    fail(f"{path}: {channel.topic}: schema is not JSON: {e}")
            for record in reader.iter_metadata():
                metadata.setdefault(record.name, []).append(dict(record.metadata))
            for schema, channel, message in reader.iter_messages(log_time_order=True):
                try:
                    decoded = json.loads(message.data)
                except ValueError as e:
                    fail(f"{path}: {channel.topic} at {message.log_time}: not JSON: {e}")
                t = topics.setdefault(
                    channel.topic,
                    {"count": 0, "schema_name": schema.name, "first_log_time_ns": message.log_time},
                )
                t["count"] += 1
                t["last_log_time_ns"] = message.log_time
                t["last"] = decoded
                nonfinite += count_nonfinite(decoded)
                if channel.topic == "/coxswain/tick":
                    tick_sum += decoded["tick"]
    json.dump(
        {
            "files": len(paths),
            "topics": topics,
            "metadata": metadata,
            "nonfinite_strings": nonfinite,
            "tick_sum": tick_sum,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        fail("usage: read_mcap.py FILE.mcap [FILE.mcap ...]")
    main(sys.argv[1:])
