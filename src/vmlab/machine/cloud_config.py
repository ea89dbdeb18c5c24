"""The files of a cloud-init NoCloud seed for one boot of one disk-image machine.

`build_seed(SeedRequest(...))` composes:

- `user-data`: a `#cloud-config` document. The user's own cloud-config (a YAML
  file, or an inline table of the lab file) comes first; vmlab adds only what
  it needs: its user (default `vmlab`) with passwordless sudo and the lab's
  public key, the same key for root, no password logins, the image's own locale
  left alone (`locale: false`), /etc/hosts naming the lab's machines, and a
  `final_message` vmlab waits for on the console. Nothing
  here makes cloud-init touch the network (no package_update, no apt mirrors):
  a boot stays as fast as the image allows unless the user asks for more.
- `meta-data`: the instance id (a new one makes cloud-init run its per-instance
  modules again) and the host name.
- `network-config` (version 2): each NIC matched by MAC, DHCP or a static
  address/prefix (private networks; the addresses come from vmlab.net).

cloud-init prints `final_message` at the very end of its last stage (after
the network is online and user commands ran), so that line on the console
means the machine is ready. When the user set their own final_message, theirs
stays, and `Seed.ready` matches it instead (cloud-init's `$uptime`-style
variables in it match anything).

Pure: no I/O except reading the user's user_data file.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vmlab.errors import ConfigError, UsageError

DEFAULT_USER = "vmlab"
CLOUD_CONFIG_HEADER = "#cloud-config"
READY_PREFIX = "VMLAB-READY"
# cloud-init renders final_message as a "basic" template: `$name` or `${name}`
# (the same pattern as cloud-init's templater), and only these names exist.
# Any other name (or `$uptime.`, read as a dotted path) fails the rendering and
# cloud-init prints nothing at all.
_TEMPLATE_VAR = re.compile(r"\$\{([A-Za-z0-9_.]+)\}|\$([A-Za-z0-9_.]+)")
_TEMPLATE_NAMES = frozenset(
    name
    for base in ("uptime", "timestamp", "version", "datasource")
    for name in (base, base.upper())
)
_TEMPLATE_HEADER = re.compile(r"##\s*template:", re.IGNORECASE)
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_HOST_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", re.IGNORECASE)
_PUBLIC_KEY = re.compile(r"(ssh-|ecdsa-|sk-)[a-z0-9@.-]+ [A-Za-z0-9+/]+=* ?[^\n]*")
_MARKER = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:=+-]*")  # no $: cloud-init would expand it
_MIN_FIXED_TEXT = 4  # a user's final_message needs this much plain text to wait for


Address = str | ipaddress.IPv4Address | ipaddress.IPv6Address


def ready_marker(token: str) -> str:
    """The console line vmlab waits for: `VMLAB-READY <token>` (token: unique per boot)."""
    return f"{READY_PREFIX} {token}"


@dataclass(frozen=True)
class Nic:
    """One NIC of the guest: matched by MAC; DHCP when `address` is None, else
    a static `ADDRESS/PREFIX` such as `10.0.1.2/24` (an ipaddress interface works too)."""

    mac: str
    address: str | ipaddress.IPv4Interface | ipaddress.IPv6Interface | None = None


@dataclass(frozen=True)
class SeedRequest:
    """Everything one boot's seed depends on.

    `marker` is the line cloud-init prints when done (use `ready_marker(token)`).
    `user_data` is the user's cloud-config: a mapping (inline in the lab file),
    a path to a `#cloud-config` YAML file, or None. `hosts` maps the lab's
    machine names to addresses for /etc/hosts.
    """

    hostname: str
    instance_id: str
    public_key: str  # one OpenSSH public key line
    marker: str
    user: str = DEFAULT_USER
    user_data: Mapping[str, Any] | Path | None = None
    nics: tuple[Nic, ...] = ()
    hosts: Mapping[str, Address] = field(default_factory=dict)


@dataclass(frozen=True)
class Seed:
    """The seed's files (name -> bytes, for `write_seed_iso`) and what to wait for.

    `ready` matches (with `search`) the console line that says cloud-init is
    done; `ready_text` is that line as configured, for messages.
    """

    files: dict[str, bytes]
    ready: re.Pattern[str]
    ready_text: str


# ------------------------------------------------------------------ user-data


def load_user_data(path: Path) -> dict[str, Any]:
    """A user's cloud-config file as a mapping; ConfigError `FILE:LINE: problem` if not."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such user_data file (fix the path in the lab file)"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: user_data is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read user_data: {exc.strerror}") from None
    first = text.split("\n", 1)[0].rstrip()
    if first != CLOUD_CONFIG_HEADER:
        raise ConfigError(
            f"{path}:1: user_data must start with a '{CLOUD_CONFIG_HEADER}' line "
            "(vmlab merges cloud-config only: no scripts, MIME or #include)"
        )
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        problem = " ".join(str(exc.problem or exc.context or "syntax error").split())
        begun = exc.context_mark  # where the unfinished thing began, when not on this line
        if exc.problem and exc.context and begun and begun.line + 1 != line:
            problem += f" ({exc.context} on line {begun.line + 1})"
        raise ConfigError(f"{path}:{line}: user_data is not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())
        raise ConfigError(f"{path}:1: user_data is not valid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a {type(data).__name__}"
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        line = node.start_mark.line + 1 if node is not None else 1
        raise ConfigError(f"{path}:{line}: user_data is {kind}, not a mapping of cloud-config keys")
    _check_keys(data, str(path))
    return data


def _check_keys(data: Mapping[Any, Any], where: str) -> None:
    bad = [key for key in data if not isinstance(key, str)]
    if bad:
        raise UsageError(f"{where}: user_data key {bad[0]!r} is not a name (cloud-config keys are)")


def _user_data(req: SeedRequest) -> tuple[dict[str, Any], str]:
    """The user's cloud-config (a deep-enough copy to extend) and where it came from."""
    if req.user_data is None:
        return {}, "user_data"
    if isinstance(req.user_data, Path):
        return load_user_data(req.user_data), str(req.user_data)
    _check_keys(req.user_data, "user_data")
    return dict(req.user_data), "user_data"


def _vmlab_user(req: SeedRequest) -> dict[str, Any]:
    return {
        "name": req.user,
        "sudo": "ALL=(ALL) NOPASSWD:ALL",
        "shell": "/bin/bash",
        "lock_passwd": True,
        "ssh_authorized_keys": [req.public_key],
    }


def _merge_users(users: object, req: SeedRequest, where: str) -> list[Any]:
    """The user's `users` plus vmlab's user (merged into theirs if they named it)."""
    if users is None:
        users = []
    elif isinstance(users, str):  # cloud-init's "default, alice" form
        users = [name.strip() for name in users.split(",") if name.strip()]
    if not isinstance(users, list):
        raise UsageError(f"{where}: users must be a list (vmlab adds its user '{req.user}' to it)")
    merged: list[Any] = []
    found = False
    for entry in users:
        if entry == req.user:
            merged.append(_vmlab_user(req))
            found = True
        elif isinstance(entry, dict) and entry.get("name") == req.user:
            mine = dict(entry)
            keys = list(mine.get("ssh_authorized_keys") or [])
            if req.public_key not in keys:
                keys.append(req.public_key)
            mine["ssh_authorized_keys"] = keys
            mine.setdefault("sudo", "ALL=(ALL) NOPASSWD:ALL")
            merged.append(mine)
            found = True
        else:
            merged.append(entry)
    if not found:
        merged.append(_vmlab_user(req))
    return merged


def _final_message(doc: Mapping[str, Any], req: SeedRequest, where: str) -> tuple[str, str]:
    """(the final_message to set, the line to wait for)."""
    theirs = doc.get("final_message")
    if theirs is None or (isinstance(theirs, str) and not theirs.strip()):
        return req.marker, req.marker  # unset or empty: vmlab's marker
    if not isinstance(theirs, str):
        raise UsageError(f"{where}: final_message must be a string")
    theirs = theirs.strip()  # as cloud-init does
    if _TEMPLATE_HEADER.match(theirs):
        raise UsageError(
            f"{where}: final_message is a '## template:' (vmlab cannot tell what it will "
            "print; use plain text with $uptime-style variables, or remove it)"
        )
    for match in _TEMPLATE_VAR.finditer(theirs):
        name = match.group(1) or match.group(2)
        if name not in _TEMPLATE_NAMES:
            raise UsageError(
                f"{where}: final_message uses ${name}, which cloud-init cannot fill in and "
                "then prints nothing (use $uptime, $timestamp, $version or $datasource, "
                "written ${uptime} before a '.')"
            )
    fixed = _TEMPLATE_VAR.sub("", theirs)
    if len(fixed.strip()) < _MIN_FIXED_TEXT:
        raise UsageError(
            f"{where}: final_message {theirs!r} has no fixed text vmlab can wait for "
            "(add some words, or remove it and vmlab prints its own marker)"
        )
    first = next(line for line in theirs.splitlines() if _TEMPLATE_VAR.sub("", line).strip())
    return theirs, first.strip()


def _ready_pattern(line: str) -> re.Pattern[str]:
    """A pattern for a configured line: its template variables match anything."""
    parts, last = [], 0
    for match in _TEMPLATE_VAR.finditer(line):
        parts.append(re.escape(line[last : match.start()]))
        parts.append(".*?")
        last = match.end()
    parts.append(re.escape(line[last:]))
    return re.compile("".join(parts))


def etc_hosts(hosts: Mapping[str, Address], *, hostname: str) -> str:
    """/etc/hosts naming the lab's machines (the guest's own name too).

    The guest's own name maps to its lab address when `hosts` has it, else to
    127.0.1.1 (Debian's convention).
    """
    lines = ["# Written by vmlab (cloud-init): the lab's machines.", "127.0.0.1\tlocalhost"]
    if hostname not in hosts:
        lines.append(f"127.0.1.1\t{hostname}")
    lines += [
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "ff02::1\tip6-allnodes",
        "ff02::2\tip6-allrouters",
    ]
    for name in sorted(hosts):
        _check_hostname(name, what="host name in hosts")
        try:
            address = ipaddress.ip_address(str(hosts[name]))
        except ValueError:
            raise UsageError(
                f"hosts: {hosts[name]!r} (for {name!r}) is not an IP address"
            ) from None
        lines.append(f"{address}\t{name}")
    return "\n".join(lines) + "\n"


def hosts_config(hosts: Mapping[str, Address], *, hostname: str) -> dict[str, Any]:
    """Cloud-config that writes `etc_hosts(...)` and keeps cloud-init from rewriting it."""
    return {
        "manage_etc_hosts": False,
        "write_files": [
            {
                "path": "/etc/hosts",
                "content": etc_hosts(hosts, hostname=hostname),
                "owner": "root:root",
                "permissions": "0644",
            }
        ],
    }


def user_data(req: SeedRequest) -> tuple[bytes, str]:
    """The merged `#cloud-config` document and the line to wait for."""
    doc, where = _user_data(req)
    doc["users"] = _merge_users(doc.get("users"), req, where)
    keys = doc.get("ssh_authorized_keys") or []
    if not isinstance(keys, list):
        raise UsageError(f"{where}: ssh_authorized_keys must be a list of public keys")
    if req.public_key not in keys:
        keys = [*keys, req.public_key]
    # Top-level keys go to root too once disable_root is false (vmlab logs in as root).
    doc["ssh_authorized_keys"] = keys
    doc.setdefault("disable_root", False)
    doc.setdefault("ssh_pwauth", False)
    # cloud-init's locale module otherwise sets en_US.UTF-8, which Debian images
    # have not generated (locale-gen lists none by default): update-locale fails,
    # cloud-config.service fails, and systemd reports the machine "degraded".
    # The image's own locale stays; a user_data `locale` of theirs is applied.
    doc.setdefault("locale", False)
    if req.hosts:
        manage = doc.get("manage_etc_hosts", False)
        if manage is True or manage == "template":
            raise UsageError(
                f"{where}: manage_etc_hosts: {manage} would overwrite the /etc/hosts vmlab "
                "writes for the lab's machines (remove it, or use 'localhost')"
            )
        fragment = hosts_config(req.hosts, hostname=req.hostname)
        doc.setdefault("manage_etc_hosts", False)
        files = doc.get("write_files") or []
        if not isinstance(files, list):
            raise UsageError(f"{where}: write_files must be a list")
        doc["write_files"] = [*files, *fragment["write_files"]]
    else:
        # The guest's own name resolves (sudo and others look it up).
        doc.setdefault("manage_etc_hosts", "localhost")
    message, wait_line = _final_message(doc, req, where)
    doc["final_message"] = message
    try:
        body = yaml.safe_dump(
            doc, sort_keys=False, default_flow_style=False, allow_unicode=True, width=4096
        )
    except yaml.YAMLError as exc:
        raise UsageError(f"{where}: a value cannot be written as YAML: {exc}") from None
    return f"{CLOUD_CONFIG_HEADER}\n{body}".encode(), wait_line


# ------------------------------------------------------- meta-data, network


def _check_hostname(name: str, *, what: str = "hostname") -> None:
    labels = name.split(".")
    if len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise UsageError(
            f"{what} {name!r} is not a valid host name (letters, digits and '-', "
            "dot-separated; no '_')"
        )


def meta_data(req: SeedRequest) -> bytes:
    """NoCloud meta-data: the instance id and the host name."""
    if not req.instance_id or any(c.isspace() for c in req.instance_id):
        raise UsageError(f"instance id {req.instance_id!r} must be non-empty, without spaces")
    _check_hostname(req.hostname)
    doc = {"instance-id": req.instance_id, "local-hostname": req.hostname}
    return yaml.safe_dump(doc, sort_keys=False).encode()


def network_config(nics: tuple[Nic, ...]) -> bytes:
    """Network config version 2: each NIC by MAC, DHCP or one static address."""
    ethernets: dict[str, Any] = {}
    seen: set[str] = set()
    for index, nic in enumerate(nics):
        mac = nic.mac.lower()
        if not _MAC.fullmatch(mac):
            raise UsageError(f"NIC MAC {nic.mac!r} is not like 52:54:00:12:34:56")
        if mac in seen:
            raise UsageError(f"NIC MAC {mac} is used twice: every NIC needs its own")
        seen.add(mac)
        entry: dict[str, Any] = {"match": {"macaddress": mac}}
        if nic.address is None:
            entry["dhcp4"] = True
        else:
            try:
                address = ipaddress.ip_interface(str(nic.address))
            except ValueError:
                raise UsageError(
                    f"NIC {mac}: {str(nic.address)!r} is not ADDRESS/PREFIX like 10.0.1.2/24"
                ) from None
            if "/" not in str(nic.address):
                raise UsageError(f"NIC {mac}: {nic.address!r} needs a prefix, like {address}")
            entry["dhcp4"] = False
            entry["addresses"] = [address.with_prefixlen]
        ethernets[f"nic{index}"] = entry
    doc = {"version": 2, "ethernets": ethernets}
    return yaml.safe_dump(doc, sort_keys=False).encode()


# ----------------------------------------------------------------------- seed


def _check_request(req: SeedRequest) -> None:
    if not _PUBLIC_KEY.fullmatch(req.public_key.strip()) or "\n" in req.public_key.strip():
        raise UsageError("the lab's public key is not one OpenSSH public key line")
    if not _MARKER.fullmatch(req.marker):
        raise UsageError(
            f"ready marker {req.marker!r} must be one line of letters, digits, spaces "
            "and ._:=+- (no '$': cloud-init would expand it)"
        )
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", req.user):
        raise UsageError(f"user name {req.user!r} is not a valid Linux user name")


def build_seed(req: SeedRequest) -> Seed:
    """The seed's files for this boot, and the console line that says it is ready."""
    _check_request(req)
    body, wait_line = user_data(req)
    files = {"user-data": body, "meta-data": meta_data(req)}
    if req.nics:
        files["network-config"] = network_config(req.nics)
    return Seed(files=files, ready=_ready_pattern(wait_line), ready_text=wait_line)


def seed_files(req: SeedRequest) -> dict[str, bytes]:
    """Just the files of `build_seed(req)` (name -> bytes)."""
    return build_seed(req).files
