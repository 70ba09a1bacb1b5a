"""The ``realistic`` simulator profile (scale work): hundreds to thousands of packages a host.

Counts are drawn from distributions close to real servers: 300 to 2,500 installed packages with
a median near 1,200 (log-normal), and 0 to 150 pending patches (most hosts have a few, some
have many), with CVE ids on the security patches (what the agent's severity heuristic calls
critical or high). The packages beyond the minimal installation come from a per-distribution
pool of synthesised names in the family's naming style (``libfoo3``/``python3-foo`` on apt,
``foo-libs``/``perl-Foo`` on dnf, ``py3-foo``/``foo-openrc`` on apk, ``python-foo`` on pacman),
shared by every host of that distribution, with versions in the distribution's format.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Mapping
from functools import cache

from .catalog import ROLES, HostProfile, fall_behind, install_kernel, seeded_rng, severity_of
from .families import BY_ID, DISTRO_WEIGHTS, DISTROS, Pkg, Spec

INSTALLED_RANGE = (300, 2_500)
INSTALLED_MEDIAN = 1_200
PENDING_MAX = 150

_REAL_STEMS = """acl attr audit avahi bind blkid bluez boost brotli bzip2 cairo cap cups cyrus
dconf db5 dns dwarf edit elf enchant event exif expat ffi flac fontconfig freetype fribidi fuse
gc gcrypt gd gdbm gdk geoip gif glib gmp gnutls gpg gpgme graphite gsm gssapi gtk harfbuzz
hogweed hunspell icu idn2 ijs iso jansson jbig jpeg json kmod krb lcms ldap ldb lmdb lua lz4
lzo magic mariadb mm mpc mpfr mysql ncurses netfilter nettle newt nfs nghttp nl nspr nss numa
ogg onig opus orc p11 pam pango parted pcap pci pcre perl pixman png polkit popt proc protobuf
psl pulse python qt raw readline rtmp sasl seccomp selinux semanage sensors sepol slang smb
snappy sodium soup speex sqlite ssh ssl sss subunit systemd talloc tasn1 tdb tevent theora
tiff tinfo tirpc uchardet udev unbound unistring usb uuid uv v4l vorbis vpx wavpack webp
wrap x11 xau xcb xcursor xdmcp xext xfixes xi xkb xml2 xmlsec xrandr xrender xslt xss xt
xtables yaml zmq zstd""".split()  # noqa: SIM905
_PREFIXES = "ab ac ad al am an ar as at ba be bi bo ca ce co cr da de di do".split()  # noqa: SIM905
_SUFFIXES = "bus cap cfg fix gen io kit lex mon net pix rpc sh tar ui util vfs wm xml zip".split()  # noqa: SIM905

# Names a package of each family takes: (pattern, what it is). ``{s}`` is the stem, ``{n}`` a
# soname digit, ``{S}`` the capitalised stem.
_PATTERNS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "apt": (("lib{s}{n}", "shared library"), ("{s}", "utilities"), ("{s}-common", "common files"),
            ("python3-{s}", "Python 3 bindings"), ("lib{s}-perl", "Perl module"),
            ("{s}-data", "architecture-independent data"), ("lib{s}-dev", "development files"),
            ("{s}-doc", "documentation")),
    "dnf": (("{s}-libs", "libraries"), ("{s}", "utilities"), ("{s}-common", "common files"),
            ("python3-{s}", "Python 3 bindings"), ("perl-{S}", "Perl module"),
            ("{s}-data", "data files"), ("{s}-devel", "development files"),
            ("{s}-doc", "documentation")),
    "apk": (("{s}-libs", "libraries"), ("{s}", "utilities"), ("{s}-openrc", "OpenRC init scripts"),
            ("py3-{s}", "Python 3 bindings"), ("perl-{s}", "Perl module"),
            ("{s}-dev", "development files"), ("{s}-doc", "documentation"),
            ("{s}-lang", "translations")),
    "pacman": (("lib{s}", "library"), ("{s}", "utilities"), ("{s}-common", "common files"),
               ("python-{s}", "Python bindings"), ("perl-{s}", "Perl module"),
               ("{s}-data", "data files"), ("{s}-docs", "documentation"),
               ("lib{s}-compat", "compatibility library")),
}  # fmt: skip
_LIBC = {"apt": "libc6", "dnf": "glibc", "apk": "musl", "pacman": "glibc"}


def _stems() -> list[str]:
    return [*_REAL_STEMS, *(p + s for p in _PREFIXES for s in _SUFFIXES)]


@cache
def realistic_repo(distro_id: str) -> Mapping[str, Pkg]:
    """The distribution's catalog plus the synthesised pool (built once per distribution)."""
    distro = BY_ID[distro_id]
    family = distro.family.name
    repo = dict(distro.catalog)
    for stem in _stems():
        for pattern, kind in _PATTERNS[family]:
            h = zlib.crc32(f"{stem}/{pattern}".encode())
            name = pattern.format(s=stem, n=h % 8, S=stem.capitalize())
            if name in repo:
                continue
            upstream = f"{1 + h % 9}.{(h >> 4) % 30}.{(h >> 9) % 20}"
            deps = (_LIBC[family],) if "lib" in pattern else ()
            spec = Spec(name, upstream, 40 + h % 6000, deps, f"{stem} {kind}")
            older, current = distro.release(spec, 0), distro.release(spec, 1)
            versions = (current,) if family in ("apk", "pacman") else (older, current)
            repo[name] = Pkg(name, versions, spec.description, deps, spec.size_kb,
                             previous=older)  # fmt: skip
    return repo


@cache
def _pool(distro_id: str) -> list[str]:
    """Names a host may have beyond its minimal installation (never ``hello``)."""
    base = set(BY_ID[distro_id].base_names)
    return sorted(n for n in realistic_repo(distro_id) if n not in base and n != "hello")


def _installed_count(rng: random.Random) -> int:
    low, high = INSTALLED_RANGE
    return min(high, max(low, round(rng.lognormvariate(math.log(INSTALLED_MEDIAN), 0.4))))


def _pending_count(rng: random.Random) -> int:
    return min(PENDING_MAX, int(rng.expovariate(1 / 20)))


def cve_ids_for(name: str, version: str) -> list[str]:
    h = zlib.crc32(f"{name}={version}".encode())
    return [f"CVE-{2023 + (h >> (8 * i)) % 2}-{10000 + (h >> (3 * i)) % 40000}"
            for i in range(1 + h % 3)]  # fmt: skip


def realistic_profile(index: int, seed: int, *, distro: str | None = None) -> HostProfile:
    rng = seeded_rng(index, seed, "realistic")
    chosen = rng.choices(DISTROS, DISTRO_WEIGHTS)[0]
    dist = BY_ID[distro] if distro else chosen
    role = rng.choice(ROLES)
    family = dist.family
    repo = realistic_repo(dist.id)
    installed = {name: repo[name].current for name in dist.base_names}
    kernel = install_kernel(dist, installed, behind=rng.random() < 0.35)
    host = HostProfile(hostname=f"{role}{index:04d}", family=family.name, os=dist.os,
                       os_version=dist.os_version, kernel=kernel, installed=installed,
                       distro_id=dist.id, repo=repo,
                       uptime_seconds=rng.randint(3600, 90 * 86400))  # fmt: skip
    for name in (*family.roles[role], *rng.sample(family.utilities, rng.randint(0, 6))):
        for pulled in (*host.missing_dependencies(name), name):
            installed.setdefault(pulled, repo[pulled].current)
    pool = _pool(dist.id)
    wanted = _installed_count(rng) - len(installed)
    extra = [n for n in rng.sample(pool, min(len(pool), wanted + 40)) if n not in installed]
    for name in extra[: max(0, wanted)]:
        installed[name] = repo[name].current
    fall_behind(host, rng, _pending_count(rng))
    for name, version in host.upgradable.items():
        if severity_of(name) in ("critical", "high"):
            host.cve_ids[name] = cve_ids_for(name, version)
    return host
