"""Example live consumer: prints what a running pipeline's `arrow_tcp` sink serves.

    # terminal 1: a pipeline with an arrow_tcp sink, e.g. examples/llm_monitor.toml plus
    #   [sinks.live]
    #   kind = "arrow_tcp"
    #   input = "stats"              # the feature_stats node: tables alerts, windows, ...
    #   wait_for_subscribers = 1     # start once the consumer is connected
    neurostream run examples/llm_monitor.toml
    # terminal 2:
    PYTHONPATH=python python examples/consumers/subscribe.py alerts --port 7071 --lz4 --slow drop_oldest

Each batch arrives as a pyarrow.RecordBatch as soon as the pipeline produces it; with
`--slow drop_oldest` a lagging consumer loses its oldest queued batches instead of being cut
off, and every batch says how many were dropped so far (`_dropped_batches`).
"""
import argparse

from neurostream.client import SubscribeError, subscribe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("output", help="a table (alerts, windows, features, ...) or frames")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7071)
    ap.add_argument("--lz4", action="store_true", help="ask for LZ4-compressed IPC buffers")
    ap.add_argument("--slow", choices=["disconnect", "drop_oldest"], default="disconnect")
    ap.add_argument("--token", help="the server's shared secret, when it binds beyond loopback")
    a = ap.parse_args()
    rows = 0
    try:
        for batch in subscribe(a.output, a.host, a.port, lz4=a.lz4, slow=a.slow, token=a.token):
            rows += batch.num_rows
            dropped = batch.column("_dropped_batches")[0].as_py() if "_dropped_batches" in batch.schema.names else 0
            print(f"{batch.num_rows} rows (total {rows}, dropped batches so far {dropped})")
            for row in batch.slice(0, 3).to_pylist():
                print("   ", {k: v for k, v in row.items() if k != "_dropped_batches"})
    except SubscribeError as e:
        raise SystemExit(str(e))
    print(f"stream ended: {rows} rows")


if __name__ == "__main__":
    main()
