"""Command line: ``gme-recwatch serve | send | simulate | canary | segments``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import httpx
import msgspec

from . import __version__, simulate
from . import settings as settings_mod
from .events import COMPLETED, STARTED, UPLOADED, canary_callback, encode_callback
from .lifecycle import STATE_NAMES
from .settings import SettingsError
from .signature import KeyringError, parse_keys_file, parse_secret_list, sign

if TYPE_CHECKING:
    from .service import Service

_EVENTS = {
    "started": STARTED,
    "completed": COMPLETED,
    "uploaded": UPLOADED,
    "1": STARTED,
    "2": COMPLETED,
    "3": UPLOADED,
}


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the callback and admin listeners",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Every flag can also be set by its environment variable; flags win.",
        epilog=SERVE_KEYS_HELP,
    )
    for f in settings_mod.fields():
        if f.metadata["secret"]:
            continue  # secrets only from the environment or a file, never on a command line
        p.add_argument(
            settings_mod.flag_name(f.name),
            dest=f.name,
            metavar="VALUE",
            help=f"{f.metadata['help']} [{settings_mod.env_name(f.name)}, default {f.default!r}]",
        )
    p.add_argument(
        "--demo",
        action="store_true",
        help="try it out (`make run`; never in production): deadlines of seconds "
        "instead of hours unless set ("
        + ", ".join(f"{settings_mod.env_name(k)}={v}" for k, v in settings_mod.DEMO_DEFAULTS.items())
        + "), the built-in demo key when no key is set, and a banner with the "
        "URLs and a ready `send` command",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="check the configuration and the keys, build everything a start builds, "
        "then exit (0: it would start) without listening or writing anything",
    )
    p.add_argument(
        "--online",
        action="store_true",
        help="with --check: also reach what the configuration names -- Redis (auth, "
        "version >= 7, scripts load), every COS bucket (HEAD, with the configured "
        "key) -- print a summary, and exit 1 naming what failed",
    )


SERVE_KEYS_HELP: Final = """\
The SecretKey (the GME console's permission key) is never a flag; give it in one of:
  GME_RECWATCH_SECRET_KEY   one key for every app (`new,old` during a rotation)
  GME_RECWATCH_KEYS_FILE    (--keys-file) a file of `BizID=key` / `*=key` lines, e.g. a mounted
                            Kubernetes Secret; re-read when it changes
Not both: a key left in the environment would stay valid after it is rotated out of the file.
The COS API key comes from TENCENTCLOUD_SECRET_ID / TENCENTCLOUD_SECRET_KEY or
--cos-credentials-file."""


def _send_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("send", help="send one correctly signed callback, to check the wiring")
    p.add_argument("--url", default="http://127.0.0.1:8080/callback")
    p.add_argument("--secret", help="SecretKey (default: $GME_RECWATCH_SECRET_KEY)")
    p.add_argument(
        "--keys-file",
        default=os.environ.get("GME_RECWATCH_KEYS_FILE", ""),
        help="or a keyring file of `BizID=key` lines: signs with --biz-id's key "
        "(default: $GME_RECWATCH_KEYS_FILE)",
    )
    p.add_argument(
        "--event",
        default="started",
        choices=sorted(_EVENTS),
        help="event type: started/1, completed/2, uploaded/3",
    )
    p.add_argument("--biz-id", type=int, default=1400000000)
    p.add_argument("--room-id", default="demo-room")
    p.add_argument("--user-id", default="demo-user")
    p.add_argument("--task-id", type=int, default=446946705284000000)
    p.add_argument("--seq-no", type=int, default=0)
    p.add_argument("--record-mode", type=int, default=1, choices=(0, 1))
    p.add_argument("--timestamp", type=int, help="sender Timestamp (default: now)")
    p.add_argument("--encoding", default="base64", choices=("base64", "hex"))
    p.add_argument("--timeout", type=float, default=5.0, help="seconds; Tencent waits about 5")


def _canary_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "canary",
        help="send one signed synthetic callback through the public path; exit 1 if it is not accepted",
        description="Proves that Tencent's callbacks can reach the service: run it every minute "
        "(the Helm chart's canary CronJob does) against the public callback URL. The "
        "service counts a verified canary in "
        "gme_recording_canary_last_success_timestamp_seconds and nowhere else.",
    )
    p.add_argument("--url", required=True, help="the public callback URL, as set in the GME console")
    p.add_argument("--secret", help="SecretKey (default: $GME_RECWATCH_SECRET_KEY)")
    p.add_argument(
        "--keys-file",
        default=os.environ.get("GME_RECWATCH_KEYS_FILE", ""),
        help="or a keyring file of `BizID=key` lines (default: $GME_RECWATCH_KEYS_FILE)",
    )
    p.add_argument("--biz-id", type=int, default=1400000000, help="the AppID to sign as")
    p.add_argument("--encoding", default="base64", choices=("base64", "hex"))
    p.add_argument("--timeout", type=float, default=5.0, help="seconds; Tencent waits about 5")


def _segments_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "segments",
        help="list tracked segments from a running service's drill-down API",
        description="Reads GET /api/v1/segments on the admin listener (e.g. through `kubectl "
        "port-forward svc/<release>-gme-recwatch-admin 8081`) and prints a table, "
        "oldest first.",
    )
    p.add_argument(
        "--url", default="http://127.0.0.1:8081", help="the admin listener [default http://127.0.0.1:8081]"
    )
    p.add_argument("--state", choices=STATE_NAMES, help="only segments in this state")
    p.add_argument("--app-id", help="only this app (BizID, or its app_id label)")
    p.add_argument("--room-id", help="only this room")
    p.add_argument(
        "--limit",
        type=int,
        default=100,
        help="most segments to show [default 100]; the total is always printed",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the API's JSON (every page fetched, merged) instead of a table",
    )
    p.add_argument("--timeout", type=float, default=10.0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gme-recwatch", description="Verify, track and monitor Tencent Cloud GME recording callbacks."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _send_parser(sub)
    _canary_parser(sub)
    _segments_parser(sub)
    simulate.add_arguments(
        sub.add_parser("simulate", help="send realistic callback traffic like Tencent's sender, then a summary")
    )
    return parser


def cmd_serve(args: argparse.Namespace) -> int:
    overrides = {f.name: getattr(args, f.name, None) for f in settings_mod.fields()}
    try:
        settings = settings_mod.load(overrides=overrides, demo=args.demo)
    except SettingsError as exc:
        print(f"gme-recwatch: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if args.demo and not settings.has_keys():
        settings = msgspec.structs.replace(settings, secret_key=settings_mod.DEMO_KEY)
    if not settings.has_keys():
        print(
            "gme-recwatch: no SecretKey configured. Set GME_RECWATCH_SECRET_KEY (one key for "
            "every app; comma-separated during a rotation) or GME_RECWATCH_KEYS_FILE (a file "
            "of `BizID=key` lines, e.g. a mounted Kubernetes Secret).",
            file=sys.stderr,
        )
        return 2

    from . import logging as log_setup
    from .server import check, event_loop_factory, run
    from .service import Service

    log_setup.configure(settings.log_level, settings.log_format)
    from .cos import CosConfigError

    try:
        service = Service(settings)
    except CosConfigError as exc:
        print(f"gme-recwatch: invalid COS configuration: {exc}", file=sys.stderr)
        return 2
    except (OSError, KeyringError, UnicodeDecodeError) as exc:
        what = str(exc) if isinstance(exc, KeyringError) else type(exc).__name__
        print(f"gme-recwatch: cannot load GME_RECWATCH_KEYS_FILE={settings.keys_file}: {what}", file=sys.stderr)
        return 2
    if args.check:
        check(service)
        if args.online:
            return _check_online(service)
        print(f"gme-recwatch {__version__}: the configuration is valid", flush=True)
        return 0
    if args.online:
        print("gme-recwatch: --online goes with --check", file=sys.stderr)
        return 2
    taken = ports_in_use(settings)
    if taken:
        print(f"gme-recwatch: {taken}", file=sys.stderr)
        return 2
    if args.demo:
        print(demo_banner(settings), flush=True)
    with asyncio.Runner(loop_factory=event_loop_factory(settings.http_stack)) as runner:
        runner.run(run(service))
    return 0


def ports_in_use(settings: settings_mod.Settings) -> str | None:
    """Why a listener cannot bind, naming the setting that moves it; None when both can. Checked
    before anything is printed, so a clash is the only thing said (the listeners, started
    later, still report a port taken meanwhile)."""
    import errno
    import socket

    problems = []
    for name, host, port in (
        ("GME_RECWATCH_PORT", settings.host, settings.port),
        ("GME_RECWATCH_ADMIN_PORT", settings.admin_host, settings.admin_port),
    ):
        try:
            infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except OSError:
            continue  # an address the listener itself will refuse, with its own message
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the listener does
            try:
                sock.bind(address)
            except OSError as exc:
                why = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
                problems.append(f"{host}:{port} ({name}): {why}")

    if not problems:
        return None
    return (
        f"could not listen on {' and '.join(problems)}. Stop what holds it (an earlier "
        "`make run`?) or move the listeners with GME_RECWATCH_PORT and "
        "GME_RECWATCH_ADMIN_PORT (--port, --admin-port)"
    )


def demo_banner(settings: settings_mod.Settings) -> str:
    """What `serve --demo` prints: where to look, the deadlines in force, and how to send.
    The key is shown only when it is the built-in demo key, never one the user configured."""
    url = f"http://127.0.0.1:{settings.port}{settings.callback_path}"
    admin = f"http://127.0.0.1:{settings.admin_port}"
    if parse_secret_list(settings.secret_key)[:1] == [settings_mod.DEMO_KEY]:
        key_line = f"demo key     : {settings_mod.DEMO_KEY}   (built in: never use it in production)"
        secret = settings_mod.DEMO_KEY
    elif settings.secret_key:
        key_line = "key          : from GME_RECWATCH_SECRET_KEY (not shown)"
        secret = '"$GME_RECWATCH_SECRET_KEY"'  # noqa: S105 - the variable, not a key
    else:
        key_line = f"keys         : from {settings.keys_file} (not shown)"
        secret = "<a key from that file>"  # noqa: S105 - a placeholder
    # `make send` reads the same variables as `serve`; name them when they differ from the
    # defaults, or it would knock on the wrong port.
    moved = "".join(
        f" {settings_mod.env_name(name)}={value}"
        for name, value in (("port", settings.port), ("callback_path", settings.callback_path))
        if value != settings_mod.default_of(name)
    )
    took = settings_mod.human_duration
    d = (
        f"stuck after {took(settings.max_recording_seconds)} recording, upload missing "
        f"{took(settings.upload_grace_seconds)} after completion, orphan without a start "
        f"after {took(settings.reorder_window_seconds)}"
    )
    local = settings.host in ("127.0.0.1", "::1", "localhost") and settings.admin_host in (
        "127.0.0.1",
        "::1",
        "localhost",
    )
    listen = (
        f"{settings.host} and {settings.admin_host} only (GME_RECWATCH_HOST / GME_RECWATCH_ADMIN_HOST "
        "open them to other machines)"
        if local
        else f"{settings.host}:{settings.port} and {settings.admin_host}:{settings.admin_port}: reachable from "
        "other machines (the admin API lists room and user ids)"
    )
    return (
        f"\n  gme-recwatch {__version__} (demo: never in production)\n"
        f"  listening on : {listen}\n"
        f"  callback URL : {url}\n"
        f"  metrics      : {admin}/metrics\n"
        f"  segments     : {admin}/api/v1/segments?state=stuck   "
        f"(or: gme-recwatch segments --url {admin} --state stuck)\n"
        f"  deadlines    : {d}\n"
        f"  {key_line}\n"
        f"  try          : make send{moved}   # or: .venv/bin/gme-recwatch send --url {url} "
        f"--secret {secret}\n"
        f"  simulate     : .venv/bin/gme-recwatch simulate --url {url} --secret {secret} "
        f"--time-scale 100   (problems show within a minute)\n"
    )


def _check_online(service: Service) -> int:
    from .server import check_online

    lines, failed = asyncio.run(check_online(service))
    print(f"gme-recwatch {__version__}: online check", flush=True)
    for line in lines:
        print(f"  {line}", flush=True)
    if failed is not None:
        print(f"gme-recwatch: online check failed: {failed}", file=sys.stderr, flush=True)
        return 1
    print("  the configuration is valid and everything it names answers", flush=True)
    return 0


def _post(
    command: str, url: str, body: bytes, key: str, encoding: str, timeout: float
) -> httpx.Response | None:
    """POST a body signed as Tencent would; None (after saying why) when there is no answer."""
    headers = {"Signature": sign(body, key, encoding), "Content-Type": "application/json"}  # type: ignore[arg-type]
    try:
        return httpx.post(url, content=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        print(f"gme-recwatch {command}: {url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None


def cmd_send(args: argparse.Namespace) -> int:
    key = _key_or_say_why("send", args)
    if key is None:
        return 2
    body = encode_callback(
        biz_id=args.biz_id,
        room_id=args.room_id,
        user_id=args.user_id,
        task_id=args.task_id,
        seq_no=args.seq_no,
        event_type=_EVENTS[args.event],
        record_mode=args.record_mode,
        timestamp=args.timestamp if args.timestamp is not None else int(time.time()),
        file_name=f"{args.biz_id}_{args.room_id}_{args.user_id}/demo_{args.task_id}_audio.mp3",
    )
    resp = _post("send", args.url, body, key, args.encoding, args.timeout)
    if resp is None:
        return 1
    print(f"{resp.status_code} {resp.text}")
    return 0 if resp.status_code == 200 else 1


def _key_or_say_why(command: str, args: argparse.Namespace) -> str | None:
    """The key `send` or `canary` signs with, or None after saying on stderr why there is none."""
    try:
        key = _signing_key(args)
    except (OSError, KeyringError, UnicodeDecodeError) as exc:
        what = str(exc) if isinstance(exc, KeyringError) else type(exc).__name__
        print(f"gme-recwatch {command}: cannot load {args.keys_file}: {what}", file=sys.stderr)
        return None
    if key is None:
        print(
            f"gme-recwatch {command}: pass --secret, set GME_RECWATCH_SECRET_KEY, or give a "
            f"--keys-file (GME_RECWATCH_KEYS_FILE) with a key for BizID {args.biz_id}",
            file=sys.stderr,
        )
    return key


def _signing_key(args: argparse.Namespace) -> str | None:
    """The key to sign with: --secret, $GME_RECWATCH_SECRET_KEY, else the keyring's for the app."""
    keys = parse_secret_list(args.secret or os.environ.get("GME_RECWATCH_SECRET_KEY", ""))
    if keys:
        return keys[0]
    if args.keys_file:
        with open(args.keys_file, encoding="utf-8") as f:
            ring = parse_keys_file(f.read())
        for_app = ring.keys_for(args.biz_id)
        return for_app[0].decode("utf-8") if for_app else None
    return None


def cmd_canary(args: argparse.Namespace) -> int:
    key = _key_or_say_why("canary", args)
    if key is None:
        return 2
    started = time.monotonic()
    resp = _post(
        "canary", args.url, canary_callback(args.biz_id, int(time.time())), key, args.encoding, args.timeout
    )
    if resp is None:
        return 1
    ms = (time.monotonic() - started) * 1000
    ok = resp.status_code == 200
    print(
        f"canary {'ok' if ok else 'failed'}: {resp.status_code} {resp.text.strip()[:200]} in {ms:.0f} ms",
        file=sys.stdout if ok else sys.stderr,
    )
    return 0 if ok else 1


_PAGE_MAX: Final = 1000  # the API's largest page


def fetch_segments(args: argparse.Namespace) -> dict[str, Any]:
    """Every page the query needs, up to ``--limit`` segments, merged into one answer."""
    params: dict[str, str | int] = {
        k: v for k, v in (("state", args.state), ("app_id", args.app_id), ("room_id", args.room_id)) if v
    }
    out: dict[str, Any] = {"total": 0, "segments": []}
    url = args.url.rstrip("/") + "/api/v1/segments"
    while True:
        want = args.limit - len(out["segments"])
        resp = httpx.get(url, params={**params, "limit": max(1, min(want, _PAGE_MAX))}, timeout=args.timeout)
        if resp.status_code != 200:
            raise ValueError(f"{url}: {resp.status_code} {resp.text.strip()[:300]}")
        page = resp.json()
        out["total"] = page["total"]
        out["segments"] += page["segments"][:want]
        if not page.get("next_cursor") or len(out["segments"]) >= args.limit:
            return out
        params["cursor"] = page["next_cursor"]


_COLUMNS: Final = ("STATE", "SINCE", "APP", "ROOM", "USER", "TASK", "SEQ", "EVENTS", "WHY")


def _why(seg: dict[str, Any]) -> str:
    """The short form of the API's ``reason``: the deadline that passed, and what COS said."""
    parts = [seg["deadline"]] if seg.get("deadline") else []
    if seg.get("check_result"):
        parts.append(
            f"cos {seg['check_result']}" + (f" ({seg['check_error']})" if seg.get("check_error") else "")
        )
    if seg.get("lost_events"):
        parts.append("lost " + "+".join(seg["lost_events"]))
    if seg.get("blind_window_start"):
        parts.append("blind window")
    return ", ".join(parts) or "-"


def segments_table(answer: dict[str, Any]) -> str:
    """A fixed-width table of ``answer``'s segments, and a line saying how many match in all."""
    rows = [_COLUMNS] + [
        (
            s["state"],
            s.get("state_since") or s["first_received_at"],
            s["app_id"],
            s["room_id"],
            s["user_id"],
            s["task_id"],
            str(s["seq_no"]),
            "+".join(s["events_seen"]) or "-",
            _why(s),
        )
        for s in answer["segments"]
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows]
    shown, total = len(answer["segments"]), answer["total"]
    lines.append(
        f"{shown} of {total} matching segment{'s' if total != 1 else ''}"
        + ("" if shown == total else " (raise --limit for more)")
        + "; SINCE is when the state began (for a problem) or when it was first heard of"
    )
    return "\n".join(lines)


def cmd_segments(args: argparse.Namespace) -> int:
    try:
        answer = fetch_segments(args)
    except httpx.HTTPError as exc:
        print(
            f"gme-recwatch segments: {args.url}: {type(exc).__name__}: {exc} (is the admin "
            "port reachable? e.g. kubectl port-forward)",
            file=sys.stderr,
        )
        return 1
    except ValueError as exc:
        print(f"gme-recwatch segments: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2) if args.json else segments_table(answer))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command. A reader that stops early (``segments --json | head``) ends it quietly:
    what it did not read is not an error, and no traceback follows."""
    try:
        return _dispatch(build_parser().parse_args(argv))
    except BrokenPipeError:
        # The interpreter flushes stdout again at exit: point it at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "simulate":
        return simulate.main(args)
    if args.command == "canary":
        return cmd_canary(args)
    if args.command == "segments":
        return cmd_segments(args)
    return cmd_send(args)


if __name__ == "__main__":
    raise SystemExit(main())
