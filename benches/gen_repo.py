#!/usr/bin/env python3
"""Generate a synthetic Keelson config repository for benchmarks.

    python3 benches/gen_repo.py OUT_DIR [--apps 2000] [--change-percent P --seed S]

Writes OUT_DIR/environments/{dev,staging,prod}.yaml and OUT_DIR/apps/app-NNNN.yaml, one
Application per file with three clusters (dev, staging, prod, all on target `local`). The output
is a pure function of the arguments: running it twice gives byte-identical files.

Traffic ports are 20000 + 3*i + env_index, unique across every cluster of the repository (local
clusters share one machine), so at most 15,178 applications fit below port 65535. Strategies
cycle over red-black, canary, rolling-red-black, highlander and rolling-update by cluster index.

--change-percent P bumps the artifact version (1.<i%50>.0 -> 1.<i%50>.1) of P% of the
applications, chosen deterministically from --seed (default 0), so that a base repository and a
changed one can be planned against each other.

Stale apps/app-*.yaml files from an earlier, larger run in OUT_DIR are removed; nothing else in
OUT_DIR is touched. Python 3 standard library only.
"""

import argparse
import hashlib
import os
import re
import sys

PORT_BASE = 20000
PORT_MAX = 65535
ENVIRONMENTS = ("dev", "staging", "prod")

# Copied from environments/*.yaml in the Keelson repository (without the editor schema comment).
ENVIRONMENT_FILES = {
    "dev": """\
apiVersion: keelson/v1
kind: Environment
metadata:
  name: dev
  description: Development. Every new version lands here first.
spec:
  targets:
    - name: local
      provider: local
  defaults:
    strategy:
      type: highlander
""",
    "staging": """\
apiVersion: keelson/v1
kind: Environment
metadata:
  name: staging
  description: Pre-production. Receives versions that are healthy in dev.
spec:
  dependsOn:
    - dev
  targets:
    - name: local
      provider: local
    - name: k8s-staging
      provider: kubernetes
      kubernetes:
        namespace: shop-staging
  defaults:
    strategy:
      type: red-black
      keepDisabled: 1
""",
    "prod": """\
apiVersion: keelson/v1
kind: Environment
metadata:
  name: prod
  description: Production. Receives versions that are healthy in staging.
  labels:
    tier: production
spec:
  dependsOn:
    - staging
  targets:
    - name: local
      provider: local
    - name: k8s-prod
      provider: kubernetes
      kubernetes:
        context: prod
        namespace: shop
    - name: aws-prod
      provider: ec2
      ec2:
        region: us-east-1
        subnets: [subnet-0a1b2c3d]
        listenerArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop/50dc6c495c0c9188/f2f7dc8efc522ab2
  constraints:
    approval: none
  defaults:
    strategy:
      type: red-black
      keepDisabled: 2
""",
}

# One entry per strategy, cycled by global cluster index; each is a list of YAML lines at the
# indentation of the cluster's `strategy:` mapping body.
STRATEGIES = (
    ["type: red-black", "keepDisabled: 1"],
    [
        "type: canary",
        "steps:",
        "  - weight: 10",
        "    pause: 30s",
        "  - weight: 50",
        "    pause: 1m",
    ],
    ["type: rolling-red-black", "steps: [25, 50, 100]"],
    ["type: highlander"],
    ["type: rolling-update", "maxUnavailable: 1"],
)


def changed_apps(apps, percent, seed):
    """The indices of round(apps * percent / 100) applications, chosen by a seeded hash.

    Uses SHA-256 rather than `random` so the choice is stable across Python versions.
    """
    count = round(apps * percent / 100)
    if count <= 0:
        return set()
    ranked = sorted(
        range(apps),
        key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest(),
    )
    return set(ranked[:count])


def application(i, name, bumped):
    patch = 1 if bumped else 0
    lines = [
        "apiVersion: keelson/v1",
        "kind: Application",
        "metadata:",
        f"  name: {name}",
        f"  owner: team-{name}@example.com",
        f"  description: Synthetic benchmark application number {i}.",
        "spec:",
        "  artifact:",
        f'    version: "1.{i % 50}.{patch}"',
        "  workload:",
        '    command: ["keelson", "demo-app", "--port", "{port}"]',
        "    env:",
        "      LOG_LEVEL: info",
        f'      APP_INDEX: "{i}"',
        "  health:",
        "    http:",
        "      path: /healthz",
        "    timeout: 60s",
        "  clusters:",
    ]
    for env_index, env in enumerate(ENVIRONMENTS):
        cluster = 3 * i + env_index
        lines += [
            f"    - environment: {env}",
            "      target: local",
            "      capacity:",
            "        min: 1",
            "        max: 6",
            "        desired: 2",
            "      strategy:",
        ]
        lines += ["        " + line for line in STRATEGIES[cluster % len(STRATEGIES)]]
        lines += [
            "      traffic:",
            f"        port: {PORT_BASE + cluster}",
        ]
    return "\n".join(lines) + "\n"


def write_if_changed(path, text):
    """Writes `text` to `path` unless the file already holds exactly that (keeps mtimes stable)."""
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Generate a synthetic Keelson config repository for benchmarks."
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to write the repository to")
    parser.add_argument("--apps", type=int, default=2000, help="number of applications (default 2000)")
    parser.add_argument(
        "--change-percent",
        type=float,
        default=0.0,
        metavar="P",
        help="bump the artifact version of P%% of the applications (default 0)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed choosing the changed applications (default 0)"
    )
    args = parser.parse_args(argv)

    max_apps = (PORT_MAX - PORT_BASE + 1) // len(ENVIRONMENTS)
    if not 1 <= args.apps <= max_apps:
        parser.error(f"--apps must be between 1 and {max_apps} (traffic ports must stay <= {PORT_MAX})")
    if not 0 <= args.change_percent <= 100:
        parser.error("--change-percent must be between 0 and 100")

    env_dir = os.path.join(args.out_dir, "environments")
    app_dir = os.path.join(args.out_dir, "apps")
    os.makedirs(env_dir, exist_ok=True)
    os.makedirs(app_dir, exist_ok=True)

    for env in ENVIRONMENTS:
        write_if_changed(os.path.join(env_dir, f"{env}.yaml"), ENVIRONMENT_FILES[env])

    width = max(4, len(str(args.apps - 1)))
    bumped = changed_apps(args.apps, args.change_percent, args.seed)
    wanted = set()
    for i in range(args.apps):
        name = f"app-{i:0{width}d}"
        file_name = f"{name}.yaml"
        wanted.add(file_name)
        write_if_changed(os.path.join(app_dir, file_name), application(i, name, i in bumped))

    stale = re.compile(r"^app-[0-9]+\.yaml$")
    for file_name in sorted(os.listdir(app_dir)):
        if stale.match(file_name) and file_name not in wanted:
            os.remove(os.path.join(app_dir, file_name))

    print(
        f"{args.out_dir}: {len(ENVIRONMENTS)} environments, {args.apps} applications, "
        f"{3 * args.apps} clusters, {len(bumped)} changed (seed {args.seed})",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
