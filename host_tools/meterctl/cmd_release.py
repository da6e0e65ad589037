"""``meterctl release``: the signed bundle, CycloneDX SBOM, software id and release notes of one board
(meterctl/release.py), in ``<out>/<board>-<version>/``.

    meterctl release --board B --key FILE [--key FILE2] [--out dist]     sign with these key files
    meterctl release --board B --throwaway-keys                          test release: fresh one-use keys
Built from a git commit (default HEAD; --worktree for the working tree, marked -dirty when it differs)."""
from meterctl import release
from meterctl.cli import CliError


def register(subparsers):
    p = subparsers.add_parser("release", help="build the release artefacts of a board (bundle, SBOM, id)",
                              description="Build, sign and describe a release for one board: signed bundle, "
                                          "CycloneDX 1.6 SBOM, software identification, release notes with "
                                          "the known vulnerabilities.")
    p.add_argument("--board", required=True, help="board name (boards/<name>/board.py)")
    p.add_argument("--key", action="append", default=[], metavar="FILE",
                   help="signing key file (meterctl keys new --alg ed25519|lms); repeat for hybrid")
    p.add_argument("--throwaway-keys", action="store_true",
                   help="also sign with fresh one-use Ed25519 + LMS keys (test releases only: their private "
                        "halves are deleted, their public halves written as THROWAWAY-*.pub)")
    p.add_argument("--out", default="dist", help="directory to write <board>-<version>/ into (default dist)")
    p.add_argument("--commit", default="HEAD", help="git commit to build from (default HEAD)")
    p.add_argument("--worktree", action="store_true",
                   help="build from the working tree instead of a commit (not reproducible if it is dirty)")
    p.add_argument("--version", help="override the version in %s" % release.RELEASE_FILE)
    p.add_argument("--counter", type=int, help="override the security counter in %s" % release.RELEASE_FILE)
    p.add_argument("--vulnerabilities", metavar="FILE",
                   help="known-vulnerabilities file (default: %s of the commit)"
                        % release.VULNERABILITIES_FILE)
    p.add_argument("--force", action="store_true", help="replace an existing release directory")
    p.set_defaults(func=run)


def run(args):
    if args.worktree and args.commit != "HEAD":
        raise CliError("--worktree and --commit exclude each other")
    final = release.build(args.board, out=args.out, key_paths=args.key, throwaway=args.throwaway_keys,
                          rev=args.commit, worktree=args.worktree, version=args.version, counter=args.counter,
                          vulnerabilities=args.vulnerabilities, force=args.force)
    for path in sorted(final.iterdir()):
        print("  %s" % path)
    ident = (final / "software-id.json").read_text()
    print("software id %s" % release.json.loads(ident)["software_id"])
    return 0
