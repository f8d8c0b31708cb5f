"""``treadctl profiles list|show NAME``."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from treadctl.cli import UsageError
from treadctl.profiles import ProfileError, list_profiles, load_profile


def register(sub: Any) -> None:
    p = sub.add_parser("profiles", help="firmware profiles: list, show NAME")
    psub = p.add_subparsers(dest="profiles_cmd", metavar="ACTION", required=True)
    lst = psub.add_parser(
        "list", help="list known firmware profiles: protocol and reverse method of each"
    )
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=_list)
    show = psub.add_parser("show", help="show one profile's limits, reverse method and quirks")
    show.add_argument("name", help="profile name or path to a .toml file")
    show.set_defaults(func=_show)


def _list(args: argparse.Namespace) -> int:
    try:
        profiles = list_profiles()
    except ProfileError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        for p in profiles:
            print(
                json.dumps(
                    {"name": p.name, "protocol": p.protocol, "reverse": p.reverse.method,
                     "description": p.description}
                )
            )
        return 0
    width = max((len(p.name) for p in profiles), default=4)
    for p in profiles:
        print(
            f"{p.name:<{width}}  protocol={p.protocol:<12} reverse={p.reverse.method:<22}"
            f" {p.description}"
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    try:
        profile = load_profile(args.name)
    except ProfileError as exc:
        raise UsageError(str(exc)) from None
    print(json.dumps(asdict(profile), indent=2))
    return 0
