"""The ``paperwire`` command line: the only place errors become messages and exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from paperwire.errors import PaperwireError


def _settings():  # noqa: ANN202 - built once per command, at the edge
    from paperwire.settings import Settings

    return Settings()


def _stop_on_signals() -> threading.Event:
    """SIGTERM/SIGINT finish the current batch, commit, and exit cleanly."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


# --- commands --------------------------------------------------------------------------------


def cmd_broker(a: argparse.Namespace) -> int:
    from paperwire.broker import serve

    serve(a.host, a.port, a.brokers, a.partitions, a.topic or [])
    return 0


def cmd_feeds_parse(a: argparse.Namespace) -> int:
    from producers.parse import parse

    try:
        data = Path(a.file).read_bytes()
    except OSError as exc:
        raise PaperwireError(f"{a.file}: {exc.strerror}") from exc
    result = parse(data, a.kind)
    for paper in result.papers:
        print(paper.model_dump_json())
    for note in result.notes:
        print(f"{a.file}: {note}", file=sys.stderr)
    for ref, reason in result.dropped:
        print(f"{a.file}: dropped {ref}: {reason}", file=sys.stderr)
    return 0


def _read_papers(path: str):  # noqa: ANN202
    from paperwire.models import Paper

    papers = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    papers.append(Paper.model_validate_json(line))
                except ValueError as exc:
                    raise PaperwireError(f"{path}:{n}: not a Paper record: {exc}") from exc
    return papers


def _load_profiles_or_fail(paths: list[Path]):  # noqa: ANN202
    from paperwire.profiles import load

    loaded = load(paths)
    for problem in loaded.problems:
        print(problem, file=sys.stderr)
    return loaded


def cmd_match(a: argparse.Namespace) -> int:
    from consumers.fast_embed import make_embedder
    from consumers.profile_store import topic_vectors
    from consumers.score import ProfileIndex

    settings = _settings()
    loaded = _load_profiles_or_fail([Path(a.profiles)])
    papers = _read_papers(a.papers)
    embedder = make_embedder(settings)
    index = ProfileIndex(loaded.profiles, topic_vectors(loaded.profiles, embedder))
    for m in index.score(papers, embedder.encode([p.text for p in papers]), top=a.top):
        print(
            json.dumps(
                {
                    "user": m.user,
                    "topic": m.topic,
                    "paper_id": m.paper_id,
                    "score": m.score,
                    "reasons": m.reasons.model_dump(),
                }
            )
        )
    return 1 if loaded.problems else 0


def cmd_profiles_validate(a: argparse.Namespace) -> int:
    loaded = _load_profiles_or_fail([Path(p) for p in a.paths])
    return 1 if loaded.problems else 0


def cmd_profiles_sync(a: argparse.Namespace) -> int:
    from consumers import profile_store
    from consumers.fast_embed import make_embedder
    from paperwire.redisio import connect

    settings = _settings()
    if not Path(a.dir).is_dir():
        raise PaperwireError(f"{a.dir}: not a folder of profile files")
    loaded = _load_profiles_or_fail([Path(a.dir)])
    if loaded.problems and not a.keep_going:
        print("profiles not synced: fix the files above (or pass --keep-going to sync the valid ones)", file=sys.stderr)
        return 1
    r = connect(settings)
    embedder = make_embedder(settings, progress=sys.stderr.isatty())
    vectors, seeds = profile_store.build(loaded.profiles, embedder, r, settings, fetch=not a.dry_run)
    if a.dry_run:
        print(f"would sync {len(loaded.profiles)} profiles ({len(vectors)} topics)")
        return 0
    version = profile_store.sync(loaded.profiles, vectors, r, settings, seeds)
    print(f"synced {len(loaded.profiles)} profiles ({len(vectors)} topics), version {version}")
    if a.reset_feedback:
        from consumers import feedback

        print(f"cleared the feedback of {feedback.reset(r, settings)} readers")
    return 1 if loaded.problems else 0


def cmd_profiles_show(a: argparse.Namespace) -> int:
    from alerts import recipients
    from consumers import feedback, profile_store
    from paperwire.redisio import connect

    settings = _settings()
    r = connect(settings)
    profile = profile_store.get_profile(r, settings, a.user)
    if profile is None:
        raise PaperwireError(f"no synced profile {a.user!r} (run `paperwire profiles sync DIR`)")
    print(f"{profile.id} <{profile.email}>  {profile.delivery.mode}, {profile.delivery.timezone}")
    state = recipients.paused(r, settings, a.user)
    print(f"mail: {'off - ' + state if state else 'on'}")
    for topic in profile.topics:
        print(f"topic: {topic.name}  (min_score {topic.min_score if topic.min_score is not None else 'default'})")
    votes = feedback.votes(r, settings, a.user)
    print(f"feedback in effect: {len(votes)}" + ("" if votes else " (none)"))
    for v in votes:
        print(f"  {v.direction:<4} like {v.paper:<14} for {v.topic}")
    return 0


def cmd_profiles_preview(a: argparse.Namespace) -> int:
    from consumers.preview import preview
    from paperwire.redisio import connect

    settings = _settings()
    matches = preview(a.user, _duration_s(a.since), settings, connect(settings), top=a.top)
    for m in matches:
        r = m.reasons
        why = [f"dense {r.similarity:.2f}", f"lexical {r.lexical:.2f}"]
        why += [f"keywords {', '.join(r.keywords)}"] if r.keywords else []
        why += [f"follows {', '.join(r.authors)}"] if r.authors else []
        why += [f"like {r.seed_paper}"] if r.seed_paper else []
        title = m.paper.title if m.paper else ""
        print(f"{m.score:6.3f}  {m.paper_id:<14} {m.topic[:28]:<28} {title[:70]}  ({'; '.join(why)})")
    verb = "best papers (thresholds ignored)" if a.top else "papers would have been sent"
    print(f"{len(matches)} {verb} for {a.user} since {a.since}", file=sys.stderr)
    return 0


def _duration_s(text: str) -> float:
    units = {"h": 3600, "d": 86400, "w": 7 * 86400}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise PaperwireError(f"--since {text!r}: expected a number and h, d or w, e.g. 7d")
    return int(text[:-1]) * units[text[-1]]


def cmd_eval(a: argparse.Namespace) -> int:
    from consumers import evaluate
    from consumers.fast_embed import make_embedder

    settings = _settings()
    paths = [Path(p) for p in a.sets] or evaluate.default_sets()
    sets = [evaluate.load_set(path, Path(a.shared)) for path in paths]  # bad input fails before the model loads
    embedder = make_embedder(settings, progress=sys.stderr.isatty())
    results = {}
    for es in sets:
        results[es.name] = evaluate.evaluate(es, embedder)
        print(evaluate.table(es.name, len(es.papers), len(es.interests), results[es.name], a.per_interest))
        print()
    print(evaluate.summary_json(results))
    return 0


def _serve_metrics(settings) -> None:  # noqa: ANN001
    if settings.metrics_port:
        from paperwire import metrics

        metrics.serve(settings.metrics_port)
        logging.getLogger("paperwire").info("metrics on :%d/metrics, health on /healthz", settings.metrics_port)


def cmd_matcher(a: argparse.Namespace) -> int:
    from consumers.matcher import run

    settings = _settings()
    _serve_metrics(settings)
    print(json.dumps(run(settings, stop=_stop_on_signals(), drain=a.drain)))
    return 0


def cmd_mailer(a: argparse.Namespace) -> int:
    from alerts.mailer import run

    settings = _settings()
    _serve_metrics(settings)
    print(json.dumps(run(settings, stop=_stop_on_signals(), drain=a.drain, dry_run=a.dry_run)))
    return 0


def cmd_alerts_render(a: argparse.Namespace) -> int:
    from alerts import files

    settings = _settings()
    loaded = _load_profiles_or_fail([Path(p) for p in a.profile])
    if loaded.problems:
        return 1
    papers = {p.id: p for p in _read_papers(a.papers)}
    written = files.write(settings, loaded.profiles, files.read_matches(Path(a.matches), papers), Path(a.out))
    for path in written:
        print(path)
    if not written:
        print("no matches for these profiles: nothing written", file=sys.stderr)
    return 0


def cmd_alerts_unpause(a: argparse.Namespace) -> int:
    from alerts import recipients
    from paperwire.redisio import connect

    settings = _settings()
    was = recipients.unpause(connect(settings), settings, a.user)
    print(f"{a.user}: {'unpaused' if was else 'was not paused'}")
    return 0


def _shard(value: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N, e.g. 0/2; got {value!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"shard {i} of {n}: I must be 0 to N-1")
    return i, n


def cmd_digests_send(a: argparse.Namespace) -> int:
    from alerts.deliver import send_due
    from paperwire.redisio import connect

    settings = _settings()
    result = send_due(settings, connect(settings), force=a.force, dry_run=a.dry_run, shard=a.shard)
    verb = "would send" if a.dry_run else "sent"
    print(f"{verb} {result.emails} digest emails ({result.papers} papers, {result.failed} failed)")
    return 0


def cmd_smtp_capture(a: argparse.Namespace) -> int:
    from alerts.capture import CaptureServer

    stop = _stop_on_signals()
    with CaptureServer(Path(a.outbox), a.host, a.port) as server:
        logging.getLogger("paperwire").info("SMTP capture on %s:%d -> %s", a.host, server.port, a.outbox)
        stop.wait()
    return 0


def cmd_doctor(a: argparse.Namespace) -> int:
    from paperwire import doctor

    checks = doctor.run(_settings())
    for check in checks:
        print(check)
    return 0 if all(c.ok for c in checks) else 1


def cmd_dashboard(a: argparse.Namespace) -> int:
    from paperwire.airflow_local import airflow_env, api_server, ensure_db
    from paperwire.demo import ROOT

    settings = _settings()
    state = settings.state_dir if settings.state_dir.is_absolute() else ROOT / settings.state_dir
    env = airflow_env(state, ROOT / "dags", {})
    ensure_db(env)
    stop = _stop_on_signals()
    with api_server(env, a.port) as url:
        print(f"Airflow dashboard of the local runs: {url}/dags  (Ctrl-C to stop)")
        stop.wait()
    return 0


def cmd_web(a: argparse.Namespace) -> int:
    import uvicorn

    from alerts.web import create_app
    from paperwire.redisio import connect

    settings = _settings()
    uvicorn.run(create_app(settings, connect(settings)), host=a.host, port=a.port, log_level="warning")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from paperwire.demo import run_demo

    return run_demo(_settings(), keep_outbox=a.keep_outbox, serve=a.serve, fresh=a.fresh)


# --- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="paperwire", description="Personalised research-paper alerts.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str, parent=sub):  # noqa: A002, ANN001, ANN202
        sp = parent.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        return sp

    b = add("broker", cmd_broker, "in-memory Kafka-protocol dev broker (librdkafka mock; development only)")
    b.add_argument("--host", default="127.0.0.1")
    b.add_argument("--port", type=int, default=9092)
    b.add_argument("--brokers", type=int, default=1)
    b.add_argument("--partitions", type=int, default=4)
    b.add_argument("--topic", action="append", help="create this topic at start (repeatable)")

    feeds = add("feeds", lambda a: 2, "feed documents")
    fsub = feeds.add_subparsers(dest="feeds_command", required=True)
    fp = add("parse", cmd_feeds_parse, "print the Paper records parsed from a document, one JSON per line", fsub)
    fp.add_argument("file")
    fp.add_argument("--kind", default="auto", choices=["auto", "arxiv-rss", "arxiv-api", "hf-daily", "rss"])

    m = add("match", cmd_match, "score papers against profile files (no Kafka or Redis needed)")
    m.add_argument("--profiles", required=True, help="a profile directory")
    m.add_argument("--papers", required=True, help="Paper JSON lines")
    m.add_argument("--top", type=int, help="each user's K best papers, regardless of thresholds")

    prof = add("profiles", lambda a: 2, "profile files")
    psub = prof.add_subparsers(dest="profiles_command", required=True)
    pv = add("validate", cmd_profiles_validate, "check profile files; FILE:LINE: message per problem", psub)
    pv.add_argument("paths", nargs="+")
    ps = add("sync", cmd_profiles_sync, "write profiles and their vectors to Redis, atomically", psub)
    ps.add_argument("dir")
    ps.add_argument("--dry-run", action="store_true")
    ps.add_argument("--keep-going", action="store_true", help="sync the valid files even if some are broken")
    ps.add_argument("--reset-feedback", action="store_true", help="also forget every reader's more/less clicks")

    sh = add("show", cmd_profiles_show, "a synced user's profile, mail state and the feedback in effect", psub)
    sh.add_argument("user")
    pp = add("preview", cmd_profiles_preview, "what a user would have received from papers already seen", psub)
    pp.add_argument("user")
    pp.add_argument("--since", default="7d", help="how far back: 12h, 7d, 2w (default 7d)")
    pp.add_argument("--top", type=int, help="show the K best regardless of thresholds, to tune min_score")

    ev = add("eval", cmd_eval, "nDCG@10 and P@5 of TF-IDF, plain embeddings and paperwire on labeled sets")
    ev.add_argument("sets", nargs="*", help="label files (default: consumers/eval/*.yaml)")
    ev.add_argument(
        "--shared",
        default=str(Path(__file__).resolve().parents[2] / "shared"),
        help="folder the label files' corpora are read from (default: ../shared)",
    )
    ev.add_argument("--per-interest", action="store_true", help="also print nDCG@10 per interest")

    mt = add("matcher", cmd_matcher, "run the matcher (consumer group on the papers topic)")
    mt.add_argument("--drain", action="store_true", help="stop once caught up")
    ml = add("mailer", cmd_mailer, "run the mailer (consumer group on the matches topic)")
    ml.add_argument("--drain", action="store_true", help="stop once caught up")
    ml.add_argument(
        "--dry-run",
        action="store_true",
        help="render and log what would be sent; send nothing, write no ledger or pending items, "
        "read as a throwaway consumer group (the real group's offsets do not move)",
    )

    al = add("alerts", lambda a: 2, "alert emails")
    asub = al.add_subparsers(dest="alerts_command", required=True)
    ar = add(
        "render",
        cmd_alerts_render,
        "write the .eml (and .html) each profile would be sent, one per profile; no SMTP, Redis or ledger",
        asub,
    )
    ar.add_argument("--profile", action="append", required=True, help="a profile file or folder (repeatable)")
    ar.add_argument("--matches", required=True, help="match JSON lines, as `paperwire match` prints them")
    ar.add_argument("--papers", required=True, help="Paper JSON lines")
    ar.add_argument("--out", required=True, help="folder for <user>.eml and <user>.html")
    au = add("unpause", cmd_alerts_unpause, "mail a recipient again after permanent failures paused them", asub)
    au.add_argument("user")

    dg = add("digests", lambda a: 2, "digest emails")
    dsub = dg.add_subparsers(dest="digests_command", required=True)
    ds = add("send", cmd_digests_send, "send the digests that are due", dsub)
    ds.add_argument("--force", action="store_true", help="send every pending digest now")
    ds.add_argument("--dry-run", action="store_true", help="render, count, send nothing")
    ds.add_argument(
        "--shard", type=_shard, default=(0, 1), metavar="I/N", help="only the readers of shard I of N (0-based)"
    )

    sc = add("smtp-capture", cmd_smtp_capture, "local SMTP server writing messages to an outbox folder")
    sc.add_argument("--outbox", default=".state/outbox")
    sc.add_argument("--host", default="127.0.0.1")
    sc.add_argument("--port", type=int, default=8025)

    add("doctor", cmd_doctor, "check Kafka, Redis, SMTP, Airflow and the input files; say how to fix problems")

    db = add("dashboard", cmd_dashboard, "serve the Airflow dashboard of the local (demo) runs on localhost")
    db.add_argument("--port", type=int, default=8080)

    w = add("web", cmd_web, "serve the unsubscribe and feedback links of the emails (PAPERWIRE_PUBLIC_URL)")
    w.add_argument("--host", default="127.0.0.1")
    w.add_argument("--port", type=int, default=8000)

    d = add("demo", cmd_demo, "run the whole pipeline once on embedded defaults")
    d.add_argument("--keep-outbox", action="store_true", help="do not clear the outbox first")
    d.add_argument("--serve", action="store_true",
                   help="afterwards, keep serving the emails' links (paperwire web) until Ctrl-C")
    d.add_argument("--fresh", action="store_true",
                   help="also forget the feedback and unsubscribes readers gave through earlier runs' links")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from paperwire.logs import setup

    setup(os.environ.get("PAPERWIRE_LOG_FORMAT", "text"), args.verbose)
    try:
        return args.fn(args)
    except PaperwireError as exc:
        print(f"paperwire: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
