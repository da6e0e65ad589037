"""`meterctl release` / `make release BOARD=B`: the artefacts a maker ships for one board and version, in
`<out>/<board>-<version>/`:

    <board>-<version>.bundle   the signed app bundle (firmware/umeter/ota/BUNDLE.md)
    sbom.cdx.json              CycloneDX 1.6 SBOM (release_sbom.py)
    software-id.json           version, security counter, software id (= SHA-256 of the manifest)
    RELEASE-NOTES.md           what it is, how it was signed, the known vulnerabilities and their status
    SHA256SUMS                 of the files above
    THROWAWAY-*.pub            only with --throwaway-keys: the public halves of the one-use test keys

Reproducible: the app is built from a git commit (`git archive`, default HEAD), not from the working tree,
ISSUED is the commit time (or $SOURCE_DATE_EPOCH), EXPIRES = ISSUED + the lifetime in RELEASE.json, the
files go in deploy's sorted order and mpy-cross output depends only on the source and its relative name.
So the manifest and payload of two builds of one commit are byte-identical; Ed25519 signatures are
deterministic (RFC 8032), so bundles signed with the same Ed25519 key files are too; an LMS signature uses
the key's next one-time leaf, so a bundle with an LMS signature differs in that signature only.
The release's version and security counter are in host_tools/meterctl/RELEASE.json (a release decision,
checked in); the known vulnerabilities in host_tools/meterctl/KNOWN_VULNERABILITIES.json."""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import meterctl
from meterctl import boards, deploy, signing_keys
from meterctl import bundle as host_bundle
from meterctl.cli import CliError

fmt = host_bundle.fmt
ROOT = deploy.ROOT
RELEASE_FILE = "host_tools/meterctl/RELEASE.json"
VULNERABILITIES_FILE = "host_tools/meterctl/KNOWN_VULNERABILITIES.json"
SOURCES = ("firmware", "boards", "requirements.txt", RELEASE_FILE, VULNERABILITIES_FILE)
THROWAWAY_LMS = ("H5", "W4")          # 32 one-time leaves: a throwaway key signs once
BLOCKING_STATES = ("exploitable",)    # CRA Annex I Part I (2)(a): no release with a known exploitable one


class ReleaseInfo:
    """Plain values about one release, for the SBOM and the notes."""

    def __init__(self, board, manifest, software_id, micropython, commit, host_version):
        self.board = board
        self.manifest = manifest
        self.software_id = software_id
        self.micropython = micropython    # {"version", "description", "properties"}
        self.commit = commit
        self.host_version = host_version


def _git(*args, cwd=ROOT, binary=False):
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True)
    if proc.returncode != 0:
        raise CliError("git %s failed: %s" % (" ".join(args), proc.stderr.decode(errors="replace").strip()))
    return proc.stdout if binary else proc.stdout.decode().strip()


def export_commit(rev, into):
    """The release's sources at commit rev, unpacked into the directory into: (commit id, commit time)."""
    commit = _git("rev-parse", "--verify", rev + "^{commit}")
    when = int(_git("log", "-1", "--format=%ct", commit))
    archive = Path(into) / "src.tar"
    archive.write_bytes(_git("archive", "--format=tar", commit, "--", *SOURCES, binary=True))
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    archive.unlink()
    return commit, when


def worktree_commit():
    """(HEAD's commit id, + '-dirty' when the release's sources differ from it, HEAD's commit time)."""
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--", *SOURCES)
    return commit + ("-dirty" if dirty else ""), int(_git("log", "-1", "--format=%ct", "HEAD"))


def source_date(commit_time):
    """ISSUED: $SOURCE_DATE_EPOCH (reproducible-builds.org) when set, else the commit time."""
    text = os.environ.get("SOURCE_DATE_EPOCH")
    if text is None:
        return commit_time
    if not text.isdigit():
        raise CliError("SOURCE_DATE_EPOCH=%r is not Unix seconds" % text)
    return int(text)


def micropython_target(board):
    """What MicroPython the bundle is for: the unix port it runs on (virtual board), or the MicroPython
    whose .mpy format mpy-cross compiled it for (real boards)."""
    if board.arch is None:
        binary = Path(sys.executable).with_name("micropython")
        out = _run([str(binary), "-c", "import sys;v=sys.implementation.version;"
                                       "print('%d.%d.%d' % v[:3], v[3] if len(v) > 3 else '')"])
        parts = out.split()
        version = parts[0] + ("-" + parts[1] if len(parts) > 1 else "")
        return {"version": version,
                "description": "MicroPython unix port (the virtual board); the bundle carries .py sources",
                "properties": {"port": "unix", "code": "py sources"}}
    out = _run([deploy.find_mpy_cross(), "--version"])
    # "MicroPython v1.29.0 on 2026-08-29; mpy-cross emitting mpy v6.3"
    try:
        version = out.split()[1].lstrip("v")
        mpy = out.rsplit("mpy v", 1)[1].strip()
    except IndexError:
        raise CliError("cannot read the MicroPython version from `mpy-cross --version`: %r" % out) from None
    return {"version": version,
            "description": "MicroPython %s for %s: the bundle's .mpy files (v%s, -march=%s) are compiled by "
                           "mpy-cross %s; the device must run a MicroPython that loads .mpy v%s"
                           % (version, board.chip, mpy, board.arch, version, mpy),
            "properties": {"port": deploy.PLATFORM_FOR_CHIP.get(board.chip, board.chip or "?"),
                           "mpy_version": mpy, "mpy_arch": board.arch}}


def _run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CliError("%s failed: %s" % (cmd[0], (proc.stderr or proc.stdout).strip()))
    return proc.stdout.strip()


def _read_json(path, what):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CliError("cannot read %s %s: %s" % (what, path, e)) from None


def known_vulnerabilities(path):
    """The entries of a KNOWN_VULNERABILITIES.json; refuses an exploitable one (nothing to release)."""
    doc = _read_json(path, "the known-vulnerabilities file")
    entries = doc.get("vulnerabilities")
    if doc.get("format") != 1 or not isinstance(entries, list):
        raise CliError("%s: not a format 1 known-vulnerabilities file" % path)
    for v in entries:
        if not isinstance(v, dict) or not v.get("id") or not v.get("summary"):
            raise CliError("%s: every vulnerability needs an id and a summary" % path)
        if v.get("status") in BLOCKING_STATES:
            raise CliError("%s is %s (%s): CRA Annex I forbids releasing with a known exploitable "
                           "vulnerability; fix it or record its analysis first"
                           % (v["id"], v["status"], path))
    return doc, entries


def load_keys(paths, tmp, throwaway, out_dir):
    """The signing keys: the key files given, plus fresh one-use Ed25519 and LMS keys when throwaway
    (their private halves stay in tmp and are deleted with it; the public halves go to out_dir)."""
    try:
        keys = [signing_keys.load(p) for p in paths]
        if throwaway:
            for alg in ("ed25519", "lms"):
                key = signing_keys.new(Path(tmp) / ("throwaway-" + alg), alg, *THROWAWAY_LMS)
                name = "THROWAWAY-%s-%s.pub" % (alg, key.key_id.hex())
                shutil.copyfile(signing_keys.public_path(key.path), Path(out_dir) / name)
                keys.append(key)
        for key in keys:
            if key.alg == fmt.ALG_LMS:
                key.tree()
    except signing_keys.SigningKeyError as e:
        raise CliError(str(e)) from None
    if not keys:
        raise CliError("no signing key: give --key FILE (meterctl keys new --alg ed25519|lms), or "
                       "--throwaway-keys for a test release that no device trusts")
    return keys


def _policy(keys):
    algs = {k.alg for k in keys}
    return "hybrid" if len(algs) == 2 else fmt.ALG_NAMES[algs.pop()]


def build(board_name, out="dist", key_paths=(), throwaway=False, rev="HEAD", worktree=False, version=None,
          counter=None, vulnerabilities=None, force=False, log=None):
    """Write the release directory; returns its Path. log(text) reports progress (default: stderr)."""
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    with tempfile.TemporaryDirectory(prefix="umeter-release-") as tmp:
        tmp = Path(tmp)
        if worktree:
            src = ROOT
            commit, commit_time = worktree_commit()
        else:
            src = tmp / "src"
            src.mkdir()
            commit, commit_time = export_commit(rev, src)
        board = boards.get(board_name, root=src / "boards")
        settings = _read_json(src / RELEASE_FILE, "the release settings")
        version = version or settings["version"]
        counter = settings["security_counter"] if counter is None else counter
        issued = source_date(commit_time)
        expires = issued + int(settings["bundle_lifetime_days"]) * 86400
        vuln_doc, vulns = known_vulnerabilities(vulnerabilities or src / VULNERABILITIES_FILE)
        from meterctl import release_sbom  # cyclonedx + jsonschema: seconds, only for a release

        requirements = release_sbom.pinned_requirements((src / "requirements.txt").read_text())

        name = "%s-%s" % (board.name, version)
        final = Path(out) / name
        if final.exists() and not force:
            raise CliError("%s exists: remove it or pass --force" % final)
        Path(out).mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".%s." % name, dir=out))
        try:
            keys = load_keys(key_paths, tmp, throwaway, stage)
            log("building %s %s from %s (arch %s) ..."
                % (board.name, version, commit[:12], board.arch or "py"))
            try:
                unsigned = host_bundle.build(board, version, counter, issued, expires,
                                             firmware_dir=src / "firmware")
                signed = host_bundle.sign(unsigned, keys)
                b = host_bundle.verify(signed, [(k.alg, k.public_key) for k in keys], policy=_policy(keys))
            except (fmt.BundleError, signing_keys.SigningKeyError) as e:
                raise CliError(str(e)) from None
            info = ReleaseInfo(board.name, b.manifest, fmt.software_id(b.manifest_bytes),
                               micropython_target(board), commit, meterctl.__version__)
            (stage / (name + ".bundle")).write_bytes(signed)
            bom = release_sbom.make_bom(info, requirements, vulns, source_date(int(time.time())))
            (stage / "sbom.cdx.json").write_text(release_sbom.to_json(bom))
            (stage / "software-id.json").write_text(json.dumps(software_id(b), indent=2) + "\n")
            (stage / "RELEASE-NOTES.md").write_text(notes(info, b, keys, throwaway, vuln_doc, vulns))
            _write_sums(stage)
            os.chmod(stage, 0o755)
            if final.exists():
                shutil.rmtree(final)
            stage.rename(final)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    log("wrote %s" % final)
    return final


def software_id(b):
    """The software identification (WELMEC 7.2), with the keys `meterctl id --json` prints."""
    m = b.manifest
    return {"version": m.version, "security_counter": m.counter,
            "software_id": fmt.software_id(b.manifest_bytes), "board": m.boards[0], "arch": m.arch}


def _write_sums(directory):
    import hashlib
    lines = ["%s  %s\n" % (hashlib.sha256(p.read_bytes()).hexdigest(), p.name)
             for p in sorted(directory.iterdir()) if p.is_file()]
    (directory / "SHA256SUMS").write_text("".join(lines))


def _utc(t):
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def notes(info, b, keys, throwaway, vuln_doc, vulns):
    """RELEASE-NOTES.md: identification, signatures, target, known vulnerabilities (CRA Annex I)."""
    m = b.manifest
    mp = info.micropython
    out = ["# umeter %s for %s" % (m.version, info.board), ""]
    if throwaway:
        out += ["**TEST RELEASE, SIGNED WITH THROWAWAY KEYS.** Their private halves were deleted after "
                "signing; no production device trusts them. The `THROWAWAY-*.pub` files are their public "
                "halves, for a test device only.", ""]
    out += ["| | |", "|---|---|",
            "| software id (SHA-256 of the manifest) | `%s` |" % info.software_id,
            "| version | %s |" % m.version,
            "| security counter | %d (a device refuses any bundle below its installed counter) |" % m.counter,
            "| board, arch | %s, %s |" % (info.board, m.arch),
            "| issued | %s (%d) |" % (_utc(m.issued), m.issued),
            "| expires | %s (%d): devices refuse the bundle after this |" % (_utc(m.expires), m.expires),
            "| source commit | %s |" % info.commit,
            "| MicroPython | %s: %s |" % (mp["version"], mp["description"]),
            "| files | %d, %d bytes (each with its SHA-256 in the manifest and in sbom.cdx.json) |"
            % (len(m.files), m.payload_size()), ""]
    out += ["## Signatures", ""]
    for alg, kid, sig in b.entries:
        throw = throwaway and any(k.key_id == kid and _is_throwaway(k) for k in keys)
        label = " (throwaway)" if throw else ""
        out.append("- %s key `%s`%s, %d bytes" % (fmt.ALG_NAMES[alg], kid.hex(), label, len(sig)))
    out += ["", "Check: `meterctl bundle verify --pubkey <public key files> %s-%s.bundle`; on a device "
            "running it, `meterctl id --port P` shows the software id above." % (info.board, m.version), ""]
    out += ["## Known vulnerabilities (CRA Annex I)", ""]
    if not vulns:
        out.append("None known at release.")
    for v in vulns:
        out.append("- **%s** (%s): %s%s" % (v["id"], v["status"], v["summary"],
                                           " %s" % v["analysis"] if v.get("analysis") else ""))
    if vuln_doc.get("review"):
        out += ["", "Review: %s" % vuln_doc["review"]]
    out += ["", "Reporting a vulnerability, the update policy and the support period: docs/SECURITY.md. "
            "The components, their versions and hashes: sbom.cdx.json.", ""]
    return "\n".join(out)


def _is_throwaway(key):
    return key.path.name.startswith("throwaway-")
