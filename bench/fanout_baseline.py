"""The fan-out a user would write by hand with pyarrow: one producer connection in, N subscriber
connections out, one writer thread and a bounded queue per subscriber (drop the subscriber when
its queue is full), Arrow IPC streams both ways. `examples/bench_fanout.rs` runs it next to the
engine's `arrow_tcp` source -> `arrow_tcp` sink with the same producer and subscribers.

    python bench/fanout_baseline.py --subscribers N --address-file F [--queue 4096]

Writes `PRODUCER_PORT SUBSCRIBER_PORT` to F once listening; subscribers send one line (the output
name, ignored) and read `OK` then the IPC stream; exits when the producer's stream ends and every
queue has drained.
"""
from __future__ import annotations

import argparse
import queue
import socket
import threading

import pyarrow as pa


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subscribers", type=int, required=True)
    ap.add_argument("--address-file", required=True)
    ap.add_argument("--queue", type=int, default=4096)
    a = ap.parse_args()
    prod = socket.create_server(("127.0.0.1", 0))
    subs = socket.create_server(("127.0.0.1", 0), backlog=256)
    with open(a.address_file + ".tmp", "w") as f:
        f.write(f"{prod.getsockname()[1]} {subs.getsockname()[1]}\n")
    import os

    os.replace(a.address_file + ".tmp", a.address_file)
    queues: list[queue.Queue] = []
    threads = []

    def serve(conn: socket.socket, q: queue.Queue):
        out = conn.makefile("wb")
        writer = None
        while True:
            batch = q.get()
            if batch is None:
                break
            if writer is None:
                writer = pa.ipc.new_stream(out, batch.schema)
            writer.write_batch(batch)
            out.flush()
        if writer is not None:
            writer.close()
        out.close()
        conn.close()

    for _ in range(a.subscribers):
        conn, _ = subs.accept()
        conn.makefile("rb").readline()
        conn.sendall(b"OK\n")
        q: queue.Queue = queue.Queue(maxsize=a.queue)
        queues.append(q)
        t = threading.Thread(target=serve, args=(conn, q), daemon=True)
        t.start()
        threads.append(t)
    conn, _ = prod.accept()
    reader = pa.ipc.open_stream(conn.makefile("rb"))
    alive = list(range(len(queues)))
    for batch in reader:
        still = []
        for i in alive:
            try:
                queues[i].put_nowait(batch)
                still.append(i)
            except queue.Full:
                pass  # too slow: dropped, like the engine's disconnect policy
        alive = still
    for q in queues:
        q.put(None)
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
