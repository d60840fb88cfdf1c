"""Admin commands for API keys (run on the server, talks to the database directly)."""
from __future__ import annotations

import argparse

from core.settings import get_settings
from storage import keys
from storage.db import make_engine, make_sessionmaker


def _session():
    engine = make_engine(get_settings().resolved_database_url)
    return make_sessionmaker(engine)()


def cmd_keys(args: argparse.Namespace) -> int:
    with _session() as session:
        if args.keys_command == "create":
            row, plaintext = keys.create_key(session, args.tenant, args.name)
            print(f"created {row.id} for tenant {row.tenant!r}; the key is shown only now:\n{plaintext}")
        elif args.keys_command == "list":
            for row in keys.list_keys(session):
                state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
                print(f"{row.id}  {row.tenant:<20} {row.prefix}…  {row.name:<20} {state}")
        elif args.keys_command == "revoke":
            if not keys.revoke(session, args.key_id):
                print(f"no active key {args.key_id}")
                return 1
            print(f"revoked {args.key_id}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("keys", help="create, list and revoke API keys (admin)")
    ks = p.add_subparsers(dest="keys_command", required=True)
    create = ks.add_parser("create", help="create a key for a tenant and print it once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="default")
    ks.add_parser("list", help="list keys (never their secret)")
    revoke = ks.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    p.set_defaults(func=cmd_keys)
