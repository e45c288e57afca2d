"""The ``switchyard`` command: serve, demo, sim, policy check, keys, canary."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def _serve(args: argparse.Namespace) -> int:
    from backends.encodings import OFFLINE_CL100K, get_encoding

    # Before the app's modules: building the tokenizer briefly holds a second copy of its ranks
    # (~20 MiB); freed now, that memory is reused by the imports instead of raising the peak.
    get_encoding(OFFLINE_CL100K)
    from gateway.server import serve
    from gateway.settings import Settings
    from gateway.telemetry.tracing import TracingConfigError, check_tracing_env
    from policies.loader import PolicyError, load_policy

    try:
        load_policy(args.policy)  # fail fast with the errors, before binding a port
        check_tracing_env(os.environ)
    except PolicyError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    except TracingConfigError as exc:
        print(f"tracing: {exc}", file=sys.stderr)
        return 1
    settings = Settings(policy_path=Path(args.policy), max_body_bytes=args.max_body_bytes)
    serve(settings, args.host, args.port, args.workers, args.log_level, args.server)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(turns=args.turns)


def _sim(args: argparse.Namespace) -> int:
    from backends.sim import run_sim

    return run_sim(args)


def _policy_check(args: argparse.Namespace) -> int:
    from policies.loader import PolicyError, load_policy

    try:
        policy = load_policy(args.file)
    except PolicyError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    print(f"{args.file}: valid policy, version {policy.version}")
    for name, backend in policy.backends.items():
        where = getattr(backend, "workers", None) or [getattr(backend, "base_url", "")]
        print(f"  backend {name} ({backend.kind}): {', '.join(str(u) for u in where)}")
    for name, model in policy.models.items():
        for version, deployments in model.version_deployments().items():
            route = " -> ".join(f"{d.backend}:{d.model}" for d in deployments)
            role = "" if not model.versions else (
                " (stable)" if version == model.stable_version else
                " (canary)" if model.canary and model.canary.version == version else "")
            label = f"{name}" if not model.versions else f"{name} version {version}{role}"
            print(f"  model {label}: {route}")
    for name, tenant in policy.tenants.items():
        print(f"  tenant {name}: {len(tenant.keys)} key(s), models {', '.join(tenant.models)}")
    return 0


def _policy_diff(args: argparse.Namespace) -> int:
    from policies.diff import diff_policies, render_changes
    from policies.loader import PolicyError, load_policy

    try:
        old, new = load_policy(args.old), load_policy(args.new)
    except PolicyError as exc:
        print(exc.message, file=sys.stderr)
        return 2
    changes = diff_policies(old, new)
    print(f"--- {args.old} (version {old.version})\n+++ {args.new} (version {new.version})")
    print(render_changes(changes))
    return 1 if changes else 0  # like diff(1): 0 same, 1 different, 2 trouble


def _replay(args: argparse.Namespace) -> int:
    import dataclasses

    from gateway.replay import (
        DEFAULT_SIM,
        DriveOptions,
        PolicyFile,
        ReplayError,
        ReplayOptions,
        TrafficError,
        read_traffic,
        render_json,
        render_table,
        run_replay,
    )
    from policies.loader import PolicyError

    try:
        policies = [PolicyFile.load(path) for path in [args.policy, *args.compare]]
        traffic = read_traffic(args.traffic, limit=args.limit)
    except (PolicyError, TrafficError) as exc:
        print(exc.message if isinstance(exc, PolicyError) else exc, file=sys.stderr)
        return 2
    knobs = {"capacity_tokens": args.sim_capacity_tokens, "prefill_us_per_token": args.sim_prefill_us_per_token,
             "itl_ms": args.sim_itl_ms}
    sim = dataclasses.replace(DEFAULT_SIM, seed=args.seed, **{k: v for k, v in knobs.items() if v is not None})
    options = ReplayOptions(DriveOptions(speed=args.speed, concurrency=args.concurrency), sim, args.warmup)
    try:
        reports = run_replay(policies, traffic, options)
    except ReplayError as exc:
        print(f"replay failed: {exc}", file=sys.stderr)
        return 1
    pace = f"recorded times x{args.speed:g}" if args.speed > 0 and traffic.is_timed \
        else "as fast as possible"
    print(render_json(traffic, reports) if args.json
          else render_table(traffic, reports, f"{pace}, at most {args.concurrency} in flight"))
    return 0


def _add_replay_arguments(replay: argparse.ArgumentParser) -> None:
    # defaults of the --sim-* flags live in gateway.replay.DEFAULT_SIM (importing it here would
    # slow every command down by the gateway's imports); the help repeats them, a test checks
    replay.add_argument("--policy", required=True, help="policy YAML file")
    replay.add_argument("--traffic", required=True,
                        help="JSONL: access-log records with content, or OpenAI request bodies")
    replay.add_argument("--compare", action="append", default=[], metavar="OTHER",
                        help="another policy to replay the same traffic through (repeatable)")
    replay.add_argument("--speed", type=float, default=1.0,
                        help="divide recorded inter-arrival times by this; 0 ignores them (default: 1)")
    replay.add_argument("--concurrency", type=int, default=16, help="most requests in flight (default: 16)")
    replay.add_argument("--limit", type=int, help="replay only the first N requests")
    replay.add_argument("--seed", type=int, default=0, help="simulator seed (default: 0)")
    replay.add_argument("--sim-capacity-tokens", type=int,
                        help="KV cache of each simulated worker, in tokens (default: 200000)")
    replay.add_argument("--sim-prefill-us-per-token", type=float,
                        help="simulated prefill time per uncached prompt token, in µs (default: 50)")
    replay.add_argument("--sim-itl-ms", type=float, help="simulated inter-token latency (default: 5)")
    replay.add_argument("--warmup", type=int, default=8,
                        help="requests sent and thrown away before measuring, so one-time costs of the "
                             "process do not land on the first policy (default: 8; 0: none)")
    replay.add_argument("--json", action="store_true", help="print the reports as JSON")
    replay.set_defaults(func=_replay)


def _keys_hash(args: argparse.Namespace) -> int:
    from policies.key_hash import hash_key

    key = args.key if args.key is not None else sys.stdin.readline().strip()
    if not key:
        print("no key given (argument or one line on stdin)", file=sys.stderr)
        return 1
    print(hash_key(key))
    return 0


def _keys_new(args: argparse.Namespace) -> int:
    from policies.key_hash import hash_key, new_key

    key = new_key()
    print(f"key:    {key}\nsha256: {hash_key(key)}")
    return 0


def _usage(args: argparse.Namespace) -> int:
    import httpx

    params = {"tenant": args.tenant, "days": args.days, **({"key": args.key} if args.key else {})}
    try:
        response = httpx.get(args.url.rstrip("/") + "/admin/usage", params=params,
                             headers={"authorization": f"Bearer {args.admin_key}"}, timeout=10)
    except httpx.HTTPError as exc:
        print(f"cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    body = response.json()
    if response.status_code != 200:
        print(f"HTTP {response.status_code}: {body.get('error', {}).get('message', body)}", file=sys.stderr)
        return 1
    print(f"{body['scope']}, last {body['days']} day(s): {body['total_tokens']} tokens, ${body['total_usd']:.4f}")
    print(f"{'day':<12} {'model':<24} {'requests':>8} {'input':>10} {'cached':>10} {'output':>10} {'USD':>10}")
    for row in body["rows"]:
        print(f"{row['day']:<12} {row['model']:<24} {row['requests']:>8} {row['input_tokens']:>10} "
              f"{row['cached_input_tokens']:>10} {row['output_tokens']:>10} {row['cost_usd']:>10.4f}")
    return 0


def _canary(args: argparse.Namespace) -> int:
    import json
    from urllib.parse import quote

    import httpx

    from policies.canary.status import render

    base = args.url.rstrip("/") + "/admin/canaries"
    headers = {"authorization": f"Bearer {args.admin_key}"}
    try:
        if args.canary_command == "status":
            response = httpx.get(base, headers=headers, timeout=10)
        else:
            response = httpx.post(f"{base}/{quote(args.model, safe='')}/{args.canary_command}", headers=headers,
                                  json={"reason": args.reason} if args.reason else None, timeout=10)
    except httpx.HTTPError as exc:
        print(f"cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    try:
        body = response.json()
    except ValueError:
        body = {"error": {"message": response.text}}
    if response.status_code != 200:
        print(f"HTTP {response.status_code}: {body.get('error', {}).get('message', body)}", file=sys.stderr)
        return 1
    rollouts = body["canaries"] if args.canary_command == "status" else [body]
    if args.canary_command == "status" and args.model:
        rollouts = [r for r in rollouts if r["model"] == args.model]
    print(json.dumps(rollouts, indent=2) if args.json else render(rollouts))
    return 0


def _add_canary_arguments(canary: argparse.ArgumentParser) -> None:
    commands = canary.add_subparsers(dest="canary_command", required=True)
    status = commands.add_parser("status", help="every canary's phase, weight, step, statistics and guards")
    status.add_argument("model", nargs="?", help="one model (default: all)")
    subs = [status]
    for action, what in (("promote", "send every request to the canary now"),
                         ("rollback", "send every request to stable now"),
                         ("pause", "hold the weight (guards still roll back)"),
                         ("resume", "continue a paused rollout, or restart a rolled back one")):
        sub = commands.add_parser(action, help=what)
        sub.add_argument("model")
        sub.add_argument("--reason", default="", help="kept in the rollout's history")
        subs.append(sub)
    for sub in subs:
        sub.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway")
        sub.add_argument("--admin-key", default=os.environ.get("SWITCHYARD_ADMIN_KEY", ""),
                         help="default: $SWITCHYARD_ADMIN_KEY")
        sub.add_argument("--json", action="store_true", help="print the API's JSON")
        sub.set_defaults(func=_canary)


def _route_explain(args: argparse.Namespace) -> int:
    from gateway.route_cli import explain

    return explain(args.policy, args.prompt, route=args.route, classifier_path=args.classifier)


def _route_calibrate(args: argparse.Namespace) -> int:
    from gateway.route_cli import calibrate_share

    return calibrate_share(args.policy, args.strong_share, sample=args.sample, route=args.route,
                           classifier_path=args.classifier)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, separate from ``main`` so tests can inspect it."""
    from backends.sim.flags import add_sim_arguments

    parser = argparse.ArgumentParser(prog="switchyard", description="An LLM gateway.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--policy", required=True, help="policy YAML file")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    serve.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024)
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn",
                       help="ASGI server (compared in docs/performance.md)")
    serve.set_defaults(func=_serve)

    demo = commands.add_parser("demo", help="run the gateway on simulated workers and show routing")
    demo.add_argument("--turns", type=int, default=3, help="turns of the multi-turn conversation")
    demo.set_defaults(func=_demo)

    sim = commands.add_parser("sim", help="run a simulated SGLang worker or provider API")
    add_sim_arguments(sim)
    sim.set_defaults(func=_sim)

    policy = commands.add_parser("policy", help="policy documents")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_commands.add_parser("check", help="validate a policy and summarise it")
    check.add_argument("file")
    check.set_defaults(func=_policy_check)
    diff = policy_commands.add_parser(
        "diff", help="what changes from OLD to NEW, and what it does (exit 0 same, 1 different, 2 invalid)")
    diff.add_argument("old")
    diff.add_argument("new")
    diff.set_defaults(func=_policy_diff)

    route = commands.add_parser("route", help="the difficulty router")
    route_commands = route.add_subparsers(dest="route_command", required=True)
    explain = route_commands.add_parser("explain", help="score a prompt and show the tier it gets")
    explain.add_argument("prompt")
    calibrate = route_commands.add_parser("calibrate", help="threshold for a target strong-model share")
    calibrate.add_argument("--strong-share", type=float, required=True)
    calibrate.add_argument("--sample", help="JSONL of requests (messages / prompt); default: the dev split")
    for sub, func in ((explain, _route_explain), (calibrate, _route_calibrate)):
        sub.add_argument("--policy", required=True)
        sub.add_argument("--route", help="one route (default: every route)")
        sub.add_argument("--classifier", help="model file (default: the shipped one)")
        sub.set_defaults(func=func)

    _add_replay_arguments(commands.add_parser(
        "replay", help="replay recorded traffic through policies on simulated workers and compare"))

    usage = commands.add_parser("usage", help="usage and spend of a tenant, from a running gateway")
    usage.add_argument("--tenant", required=True)
    usage.add_argument("--key", help="one key's usage (its name)")
    usage.add_argument("--days", type=int, default=7)
    usage.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway")
    usage.add_argument("--admin-key", default=os.environ.get("SWITCHYARD_ADMIN_KEY", ""),
                       help="default: $SWITCHYARD_ADMIN_KEY")
    usage.set_defaults(func=_usage)

    _add_canary_arguments(commands.add_parser("canary", help="canary rollouts, on a running gateway"))

    keys = commands.add_parser("keys", help="API keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    hash_ = keys_commands.add_parser("hash", help="print the sha256 to put in the policy")
    hash_.add_argument("key", nargs="?", help="the plain key (else read from stdin)")
    hash_.set_defaults(func=_keys_hash)
    new = keys_commands.add_parser("new", help="make a new random key and its hash")
    new.set_defaults(func=_keys_new)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``switchyard`` console script."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
