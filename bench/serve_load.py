"""Load test of `rag serve`: concurrent chat users while an upload is ingested, against the same questions unloaded.

Starts `rag serve` on localhost (bundled models, a temporary data folder), uploads samples/ and a few small example
documents as the collection users chat with, then measures in phases:
  1. idle: sequential POST /v1/retrieve (hybrid) for --probe-seconds; each question asked once (the reference).
  2. ingest only: the same retrieval probe while --ingest-files are uploaded into a fresh collection.
  3. load: --users chat clients (bounded asyncio/httpx, they stop by themselves after --seconds) plus the probe,
     while the same files are uploaded again into another fresh collection.
Prints p50/p95 of retrieval (client-side and the server's own stage times) and chat latency, per-stage p50/p95,
the error count, whether both ingests finished with every chunk, and whether the loaded answers equal the reference.

Usage (from the repository root):
    python bench/serve_load.py [--users 8] [--seconds 300] [--probe-seconds 30] [--set service.ingest_nice=0] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
import _path  # noqa: E402, F401  (the repository root first on sys.path: see bench/_path.py)

from bench._common import OFFLINE_ENV, add_set_option, machine_line, reproduce_command  # noqa: E402

EXAMPLES = REPO.parent / "shared" / "data" / "unstructured-example-docs" / "docs"
BASE_EXAMPLES = ["stanley-cups.csv", "simple-table.md", "codeblock.md", "fake-html-cp1252.html"]
# Twelve files of eight types, ~196 chunks, that all parse offline (not the 2.4 MB 10-K, the 635-chunk EPUB or the
# password-protected sheet): one upload a 2-core machine ingests in minutes.
INGEST_FILES = [
    "norwich-city.txt", "2023-half-year-analyses-by-segment.xlsx", "example-10k-1p.html",
    "example-steelJIS-datasheet.html", "handbook-1p.docx", "vodafone.xlsx", "sample-presentation.pptx", "README.rst",
    "fake.odt", "docx-tables.docx", "fake-power-point-table.pptx", "docx-hdrftr.docx",
]  # fmt: skip
QUESTIONS = [
    "How many days of paid leave do employees get?",
    "How long must passwords be?",
    "What does the warranty cover?",
    "How many Stanley Cups have the Maple Leafs won?",
    "How often must the torque wrench be calibrated?",
    "Who do I call when a laptop is stolen?",
    "What is the torque range?",
    "Can unused leave days be carried over?",
]
PROBES = ["paid leave days", "password length", "warranty", "stanley cups", "laptop encryption", "calibration"]


def pct(values: list[float], q: float) -> float | None:
    """The q-th percentile by nearest rank (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def stats(values: list[float]) -> dict[str, Any]:
    r = lambda v: None if v is None else round(v, 1)  # noqa: E731
    return {"n": len(values), "p50": r(pct(values, 50)), "p95": r(pct(values, 95)), "max": r(max(values, default=None))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`rag serve` in a child process on a free port; its log in the data folder."""

    def __init__(self, data: Path, workers: int, overrides: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data / "serve.log"
        env = {**os.environ, **dict(kv.split("=", 1) for kv in OFFLINE_ENV.split()), "UNSTRUCTURED_DISABLE_NOTICE": "1"}
        command = [
            sys.executable, "-m", "rag.cli", "serve", "--port", str(self.port), "--workers", str(workers),
            "--set", f"data_dir={data}", *(f"--set={o}" for o in overrides),
        ]  # fmt: skip
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    async def ready(self, client: Any, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"rag serve exited with {self.process.returncode}: see {self.log_path}")
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except Exception:  # not listening yet
                pass
            await asyncio.sleep(0.5)
        raise SystemExit(f"rag serve not ready after {timeout_s:.0f} s: see {self.log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


async def upload(client: Any, collection: str, paths: list[Path]) -> dict[str, Any]:
    r = await client.post("/v1/collections", json={"name": collection})
    if r.status_code not in (201, 409):
        raise SystemExit(f"creating {collection}: {r.status_code} {r.text}")
    files = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]
    r = await client.post(f"/v1/collections/{collection}/documents", files=files)
    if r.status_code != 202:
        raise SystemExit(f"upload to {collection}: {r.status_code} {r.text}")
    return dict(r.json())


async def wait_job(client: Any, job_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["state"] in ("done", "failed") or time.monotonic() > deadline:
            return dict(job)
        await asyncio.sleep(0.5)


async def ingest_check(client: Any, collection: str, job: dict[str, Any]) -> dict[str, Any]:
    """Whether the job finished with every chunk: done, no file errors, store count = job count, documents whole."""
    described = (await client.get(f"/v1/collections/{collection}")).json()
    docs = (await client.get(f"/v1/collections/{collection}/documents")).json()["data"]
    seconds = None
    if job.get("started_at") and job.get("finished_at"):
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        start, end = (time.mktime(time.strptime(job[k], fmt)) for k in ("started_at", "finished_at"))
        seconds = end - start
    complete = (
        job["state"] == "done"
        and not job["errors"]
        and described.get("chunks") == job["chunks"]
        and all(d["indexed"] and d["complete"] for d in docs)
    )
    return {
        "state": job["state"], "files": job["files_total"], "files_ingested": job["files_ingested"],
        "chunks": job["chunks"], "chunks_in_store": described.get("chunks"), "errors": job["errors"],
        "seconds": seconds, "every_chunk": complete,
    }  # fmt: skip


def retrieval_ms(body: dict[str, Any]) -> float:
    """The server's own retrieval time: query embeddings (dense, sparse) and the search."""
    t = body.get("timings_ms", {})
    return float(sum(t.get(k, 0.0) for k in ("embed_dense", "embed_sparse", "search")))


async def probe(client: Any, collection: str, until: Any) -> dict[str, list[float]]:
    """Sequential hybrid retrievals until `until()` is true: client latency and the server's retrieval time."""
    out: dict[str, list[float]] = {"client_ms": [], "server_ms": [], "errors": []}
    i = 0
    while not until():
        t0 = time.perf_counter()
        r = await client.post("/v1/retrieve", json={"query": PROBES[i % len(PROBES)], "collection": collection})
        i += 1
        if r.status_code != 200:
            out["errors"].append(r.status_code)
            continue
        out["client_ms"].append((time.perf_counter() - t0) * 1000)
        out["server_ms"].append(retrieval_ms(r.json()))
    return out


def answer_key(body: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    return body["choices"][0]["message"]["content"], tuple(c["chunk_id"] for c in body.get("citations", []))


async def ask(client: Any, collection: str, question: str) -> Any:
    return await client.post(
        "/v1/chat/completions", json={"model": collection, "messages": [{"role": "user", "content": question}]}
    )


async def chat_user(
    client: Any, collection: str, offset: int, deadline: float, reference: dict[str, Any], out: dict[str, Any]
) -> None:
    i = offset
    while time.monotonic() < deadline:
        question = QUESTIONS[i % len(QUESTIONS)]
        i += 1
        t0 = time.perf_counter()
        try:
            r = await ask(client, collection, question)
        except Exception as e:  # a timeout or a dropped connection is an error of the run, counted
            out["errors"].append(f"{type(e).__name__}: {e}")
            continue
        if r.status_code != 200:
            out["errors"].append(f"{r.status_code}: {r.text[:200]}")
            continue
        body = r.json()
        out["chat_ms"].append((time.perf_counter() - t0) * 1000)
        for stage, ms in body.get("timings_ms", {}).items():
            out["stages"].setdefault(stage, []).append(ms)
        same = answer_key(body) == reference[question]
        out["equal"] += same
        out["answers"] += 1
        if not same:
            out["different"].append(question)


def _load() -> list[float]:
    """The machine's load average (1, 5, 15 min): other engineers' work shares these cores."""
    return [round(x, 2) for x in os.getloadavg()]


async def ingest_only(
    client: Any, ingest_files: list[Path], args: argparse.Namespace, result: dict[str, Any]
) -> dict[str, list[float]]:
    """Phase 2: the retrieval probe while the example documents are ingested into a fresh collection."""
    queued = await upload(client, "ingest-a", ingest_files)
    state = {"done": False}

    async def watch(job_id: str) -> dict[str, Any]:
        job = await wait_job(client, job_id, args.ingest_timeout)
        state["done"] = True
        return job

    watcher = asyncio.create_task(watch(queued["id"]))
    during = await probe(client, "base", lambda: state["done"])
    result["ingest_only"] = await ingest_check(client, "ingest-a", await watcher)
    return during


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    data = Path(tempfile.mkdtemp(prefix="serve-load-"))
    base_files = sorted((REPO / "samples").iterdir()) + [EXAMPLES / n for n in BASE_EXAMPLES if (EXAMPLES / n).exists()]
    ingest_dir = Path(args.ingest_dir) if args.ingest_dir else EXAMPLES
    ingest_files = (
        sorted(p for p in ingest_dir.iterdir() if p.is_file() and not p.name.startswith("."))
        if args.ingest_dir
        else [EXAMPLES / n for n in INGEST_FILES if (EXAMPLES / n).exists()]
    )
    if not ingest_files:
        raise SystemExit(f"no files to ingest under {ingest_dir} (the example documents live in ../shared/data)")
    server = Server(data, args.workers, args.overrides)
    result: dict[str, Any] = {"command": reproduce_command("bench/serve_load.py"), "machine": machine_line()}
    loads: dict[str, list[float]] = {"start": _load()}
    limits = httpx.Limits(max_connections=args.users + 8)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=args.request_timeout, limits=limits) as client:
            t0 = time.monotonic()
            await server.ready(client)
            result["startup_s"] = round(time.monotonic() - t0, 1)
            job = await wait_job(client, (await upload(client, "base", base_files))["id"], args.ingest_timeout)
            result["base"] = await ingest_check(client, "base", job)

            # 1. idle
            reference: dict[str, Any] = {}
            for q in QUESTIONS:
                r = await ask(client, "base", q)
                r.raise_for_status()
                reference[q] = answer_key(r.json())
            end = time.monotonic() + args.probe_seconds
            idle = await probe(client, "base", lambda: time.monotonic() > end)

            loads["idle"] = _load()

            # 2. retrieval while an ingest runs, nothing else
            if args.skip_ingest_only:
                during: dict[str, list[float]] = {"client_ms": [], "server_ms": [], "errors": []}
            else:
                during = await ingest_only(client, ingest_files, args, result)
            loads["during_ingest"] = _load()

            # 3. chat users + probe + ingest
            loaded: dict[str, list[float]]
            out: dict[str, Any] = {"chat_ms": [], "stages": {}, "errors": [], "equal": 0, "answers": 0, "different": []}
            if args.users > 0:
                queued = await upload(client, "ingest-b", ingest_files)
                deadline = time.monotonic() + args.seconds
                users = [chat_user(client, "base", i, deadline, reference, out) for i in range(args.users)]
                probing = asyncio.create_task(probe(client, "base", lambda: time.monotonic() > deadline))
                await asyncio.gather(*users)
                loaded = await probing
                job = await wait_job(client, queued["id"], args.ingest_timeout)
                result["ingest_under_load"] = await ingest_check(client, "ingest-b", job)
                result["ingest_under_load"]["finished_within_load"] = (
                    job.get("finished_at") is not None and (result["ingest_under_load"]["seconds"] or 0) <= args.seconds
                )
            else:
                loaded = {"client_ms": [], "server_ms": [], "errors": []}
            loads["under_load"] = _load()
            metrics = (await client.get("/metrics")).text
    finally:
        server.stop()
    errors = len(out["errors"]) + sum(len(p["errors"]) for p in (idle, during, loaded))
    result.update(
        users=args.users, seconds=args.seconds, ingest_files=[p.name for p in ingest_files],
        retrieval_idle={"client": stats(idle["client_ms"]), "server": stats(idle["server_ms"])},
        retrieval_during_ingest={"client": stats(during["client_ms"]), "server": stats(during["server_ms"])},
        retrieval_under_load={"client": stats(loaded["client_ms"]), "server": stats(loaded["server_ms"])},
        chat=stats(out["chat_ms"]), stages={k: stats(v) for k, v in sorted(out["stages"].items())},
        errors=errors, error_samples=out["errors"][:5], answers=out["answers"], answers_equal=out["equal"],
        answers_different=sorted(set(out["different"])),
        server_errors_metric=sum(
            float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith("rag_errors_total{")
        ),
        load_average=_load(), load_average_after_phase=loads,
        query_batches={k: _gauge(metrics, f"rag_query_embed_{k}") for k in ("batches", "queries")},
        data_dir=str(data), serve_log=str(server.log_path),
    )  # fmt: skip
    return result


def _gauge(metrics: str, name: str) -> float | None:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def human(r: dict[str, Any]) -> None:
    print(f"# {r['command']}\n# {r['machine']}; load average at the end {r['load_average']}")
    print(f"server ready {r['startup_s']} s after start")
    b = r["base"]
    print(f"chat collection: {b['files']} files, {b['chunks']} chunks (every chunk: {b['every_chunk']})")

    def row(name: str, s: dict[str, Any]) -> None:
        print(f"  {name:<34} n={s['n']:<5} p50={s['p50']} ms  p95={s['p95']} ms  max={s['max']} ms")

    print("hybrid retrieval (POST /v1/retrieve; client = round trip, server = embed + search):")
    loads = r["load_average_after_phase"]
    for key, label, phase in (
        ("retrieval_idle", "idle", "idle"),
        ("retrieval_during_ingest", "during an ingest", "during_ingest"),
        ("retrieval_under_load", f"{r['users']} chat users + ingest", "under_load"),
    ):
        if not r[key]["client"]["n"]:
            continue
        print(f"  ({label}: load average at the phase's end {loads.get(phase)})")
        row(f"{label}, client", r[key]["client"])
        row(f"{label}, server", r[key]["server"])
    if r["users"]:
        print(f"chat ({r['users']} users, {r['seconds']} s):")
        row("chat completion", r["chat"])
        for stage, s in r["stages"].items():
            row(f"stage {stage}", s)
        print(f"answers equal to the unloaded ones: {r['answers_equal']}/{r['answers']}", end="")
        print(f" (different: {r['answers_different']})" if r["answers_different"] else "")
    batches = r["query_batches"]
    if batches["batches"]:
        print(f"query embeddings: {batches['queries']:g} in {batches['batches']:g} forward passes")
    print(f"errors: {r['errors']} {r['error_samples'] or ''} (server rag_errors_total {r['server_errors_metric']:g})")
    for key in ("ingest_only", "ingest_under_load"):
        if key in r:
            i = r[key]
            print(
                f"{key}: {i['state']}, {i['files_ingested']}/{i['files']} files, {i['chunks']} chunks "
                f"({i['chunks_in_store']} in the store) in {i['seconds']} s; every chunk: {i['every_chunk']}"
                + (f"; errors {i['errors']}" if i["errors"] else "")
            )
    print(f"(server log: {r['serve_log']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=4, help="concurrent chat users (0: retrieval probes only)")
    parser.add_argument("--seconds", type=float, default=60, help="how long the chat users run")
    parser.add_argument("--probe-seconds", type=float, default=20, help="idle retrieval probe duration")
    parser.add_argument("--workers", type=int, default=4, help="rag serve --workers (query threads)")
    parser.add_argument("--ingest-dir", help="upload every file of this folder (default: a list of example docs)")
    parser.add_argument("--ingest-timeout", type=float, default=1800, help="longest wait for an ingest job")
    parser.add_argument("--request-timeout", type=float, default=300, help="client timeout per request")
    parser.add_argument(
        "--skip-ingest-only", action="store_true", help="skip phase 2 (retrieval during an ingest alone): shorter runs"
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    add_set_option(parser, "service.ingest_nice=0")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result)) if args.json else human(result)


if __name__ == "__main__":
    main()
