"""What each distribution family installs and offers: package names, version formats, kernels.

A ``Distro`` (Ubuntu, Debian, Rocky, Fedora, Alpine, Arch) belongs to one ``Family`` (apt, dnf,
apk, pacman: the agent's backends, agent-api.md §6). Its ``catalog`` is the repository as the
simulated host sees it: every package of a minimal installation (the packaging tool's own
packages and the running kernel's among them), the installable-but-not-installed packages
(``hello`` among them) and, for each, two versions in the distribution's native format: the one
a host that is behind still has, and the current one. Dependencies are the names the agent
reports in a package's detail; installing or updating a package installs the missing ones too.
Kernel packages named after no build (rpm's ``kernel-core``, apk's ``linux-lts``, pacman's
``linux``) are updated in place; apt's metapackages (``linux-generic``, ``linux-image-amd64``)
depend on the new build's versioned image, which their update installs beside the old one (a
rollback to the old metapackage leaves it installed, as on a real system).

Versions are a pure function of the package name, so every host of a distribution agrees on them
(and the same seed gives the same fleet).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache

SELF = "linux-patch-api"  # the agent's own package (self-update: PUT /packages/linux-patch-api)
AGENT_UPSTREAM = "2.6.12"


@dataclass(frozen=True)
class Pkg:
    """Repository metadata of one package: ``versions`` the repository offers, ascending
    (apt and dnf repositories keep the older build beside the current one; apk and pacman
    repositories carry only the current one); ``previous`` the build a host that is behind
    still has installed."""

    name: str
    versions: tuple[str, ...]
    description: str
    dependencies: tuple[str, ...] = ()
    size_kb: int = 100
    # rpm: the epoch ("1:"), which only ``dnf check-update`` prints (the patch list's
    # available_version); rpm -qa / -qi / --qf %{VERSION}-%{RELEASE} leave it out.
    epoch: str = ""
    previous: str | None = None

    @property
    def current(self) -> str:
        return self.versions[-1]


@dataclass(frozen=True)
class Spec:
    """A package before the distribution's release format is applied."""

    name: str
    upstream: str  # "1:9.6p1" carries an epoch
    size_kb: int
    dependencies: tuple[str, ...]
    description: str


def _specs(text: str) -> tuple[Spec, ...]:
    """One package a line: ``name upstream size_kb deps|- description words``."""
    specs = []
    for line in text.strip().splitlines():
        name, upstream, size, deps, description = line.split(maxsplit=4)
        specs.append(Spec(name, upstream, int(size), tuple(d for d in deps.split(",") if d != "-"),
                          description))  # fmt: skip
    return tuple(specs)


@dataclass(frozen=True)
class Kernel:
    """A kernel build: what ``uname -r`` says and the packages that carry it."""

    release: str  # system/info.kernel
    packages: Mapping[str, str]  # name -> version
    image: str  # the package whose version identifies this build
    # Metapackages' dependencies in this build (apt: linux-generic -> linux-image-generic ->
    # the versioned image): updating a metapackage installs the new build's image beside the old.
    depends: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    name: str  # apt | dnf | apk | pacman
    tool: str  # the packaging tool's own package
    command: str  # the program the agent runs (job logs and errors)
    # The arguments the agent passes for each operation (Op.value), before the package names;
    # "patch_all": a patch apply without a package list (agent-api.md 3.11).
    arguments: Mapping[str, str]
    pin: str  # how an install pins a version ("=" name=ver, "-" name-ver; "" no pinning)
    # A failure of the command: exit code and stderr (``{pkg}`` is the package name).
    not_found: tuple[int, str]
    # A refused removal: apt and dnf refuse to remove (with the packages depending on it) a
    # package in ``protected_names`` (apt: Essential, without --allow-remove-essential; dnf:
    # protected packages); apk and pacman refuse to remove a package another installed package
    # still depends on (``{by}``). ``{pkg}`` is the package asked for.
    protected: tuple[int, str]
    protected_names: frozenset[str]
    # Injected job failures (fault ``job_failures``) in this tool's words: code -> (exit, stderr);
    # codes not listed use model.FAILURES (apt's words, or the tool-independent ones).
    failures: Mapping[str, tuple[int, str]]
    base: tuple[Spec, ...]  # a minimal installation
    repo: tuple[Spec, ...]  # installable, not installed by default
    roles: Mapping[str, tuple[str, ...]]  # host role -> repository packages it runs
    utilities: tuple[str, ...]  # repository packages an administrator often adds


@dataclass(frozen=True)
class Distro:
    id: str
    family: Family
    os: str  # system/info.os
    os_version: str  # system/info.os_version
    kernels: tuple[Kernel, Kernel]  # (running, the update the repository offers)
    release: Callable[[Spec, int], str]  # the version of revision 0 (older) or 1 (current)
    extra_base: tuple[Spec, ...] = ()  # distribution-only base packages (release, keyring)
    upstream: Mapping[str, str] = field(default_factory=dict)  # name -> upstream override
    rename: Mapping[str, str] = field(default_factory=dict)  # family name -> distro name

    @property
    def catalog(self) -> Mapping[str, Pkg]:
        return _catalog(self.id)

    @property
    def base_names(self) -> tuple[str, ...]:
        """What every host of this distribution has installed (the running kernel's packages
        included)."""
        return _base_names(self.id)


def _hash(name: str) -> int:
    return zlib.crc32(name.encode())


def _split_epoch(upstream: str) -> tuple[str, str]:
    epoch, _, rest = upstream.rpartition(":")
    return (f"{epoch}:" if epoch else ""), rest


def _ubuntu(spec: Spec, n: int) -> str:
    epoch, up = _split_epoch(spec.upstream)
    h = _hash(spec.name)
    debian, ubuntu, point = 1 + h % 4, 1 + (h >> 4) % 9, (h >> 8) % 6
    if (h >> 12) % 4 == 0:  # rebuilt for the release, never patched: "build1"
        tail = f"-{debian}build{1 + (h >> 14) % 2}"
        return f"{epoch}{up}{tail}" + (f"ubuntu0.24.04.{1 + point}" if n else "")
    point += n
    return f"{epoch}{up}-{debian}ubuntu{ubuntu}" + (f".{point}" if point else "")


def _debian(spec: Spec, n: int) -> str:
    epoch, up = _split_epoch(spec.upstream)
    h = _hash(spec.name)
    revision, point = 1 + h % 5, (h >> 6) % 4 + n
    return f"{epoch}{up}-{revision}" + (f"+deb12u{point}" if point else "")


def _el9(spec: Spec, n: int) -> str:
    _, up = _split_epoch(spec.upstream)  # rpm's VERSION-RELEASE carries no epoch
    release = 1 + _hash(spec.name) % 40
    return f"{up}-{release}.el9" if n == 0 else f"{up}-{release + 1}.el9_4"


def _fc40(spec: Spec, n: int) -> str:
    _, up = _split_epoch(spec.upstream)
    return f"{up}-{1 + _hash(spec.name) % 6 + n}.fc40"


def _alpine(spec: Spec, n: int) -> str:
    _, up = _split_epoch(spec.upstream)  # apk has no epochs
    return f"{up}-r{_hash(spec.name) % 5 + n}"


def _arch(spec: Spec, n: int) -> str:
    epoch, up = _split_epoch(spec.upstream)
    return f"{epoch}{up}-{1 + _hash(spec.name) % 3 + n}"


# -- apt (Debian, Ubuntu) ------------------------------------------------------------------------

APT = Family(
    name="apt",
    tool="apt",
    command="apt-get",
    arguments={"install": "install -y --", "update": "install -y --only-upgrade --",
               "remove": "remove -y --", "patch_apply": "install -y --",
               "patch_all": "dist-upgrade -y"},
    pin="=",
    not_found=(100, "E: Unable to locate package {pkg}"),
    protected=(100, "E: Essential packages were removed and -y was used without "
                    "--allow-remove-essential."),
    protected_names=frozenset({"apt", "dpkg", "bash", "coreutils", "libc6", "base-files",
                               "libc-bin", "login", "grep", "sed", "tar", "gzip", "util-linux",
                               "perl-base", "init-system-helpers"}),
    failures={},  # model.FAILURES are apt's words
    base=_specs("""
apt 2.6.1 4156 libapt-pkg6.0,libc6,gpgv,debian-archive-keyring commandline package manager
libapt-pkg6.0 2.6.1 3308 libc6,libzstd1,zlib1g package management runtime library
dpkg 1.21.22 6720 tar,libc6,libzstd1 Debian package management system
base-files 12.4 400 - Debian base system miscellaneous files
bash 5.2.15 1864 base-files GNU Bourne Again SHell
coreutils 9.1 7196 libc6 GNU core utilities
grep 3.8 540 libc6,libpcre2-8-0 GNU grep, egrep and fgrep
sed 4.9 336 libc6 GNU stream editor for filtering/transforming text
mawk 1.3.4.20200120 232 libc6 Pattern scanning and text processing language
tar 1.34 2800 libc6 GNU version of the tar archiving utility
gzip 1.12 256 libc6 GNU compression utilities
xz-utils 5.4.1 848 liblzma5 XZ-format compression utilities
liblzma5 5.4.1 380 libc6 XZ-format compression library
zlib1g 1:1.2.13.dfsg 170 libc6 compression library - runtime
libzstd1 1.5.4+dfsg2 900 libc6 fast lossless compression algorithm
libc6 2.36 13000 libgcc-s1 GNU C Library: Shared libraries
libc-bin 2.36 2400 libc6 GNU C Library: Binaries
libgcc-s1 12.2.0 140 libc6 GCC support library
libpcre2-8-0 10.42 680 libc6 New Perl Compatible Regular Expression Library- 8 bit runtime files
libssl3 3.0.15 6160 libc6 Secure Sockets Layer toolkit - shared libraries
openssl 3.0.15 2300 libssl3 Secure Sockets Layer toolkit - cryptographic utility
ca-certificates 20230311 392 openssl Common CA certificates
systemd 252.30 14000 libsystemd0,mount,libssl3 system and service manager
libsystemd0 252.30 950 libc6,liblzma5,libzstd1 systemd utility library
systemd-sysv 252.30 90 systemd system and service manager - SysV compatibility symlinks
systemd-timesyncd 252.30 180 systemd minimalistic service to synchronize local time with NTP servers
udev 252.30 9200 libsystemd0 /dev/ and hotplug management daemon
dbus 1.14.10 520 libsystemd0,libexpat1 simple interprocess messaging system (system message bus)
libexpat1 2.5.0 390 libc6 XML parsing C library - runtime library
openssh-server 1:9.2p1 1900 openssh-client,libssl3 secure shell (SSH) server, for secure access from
openssh-client 1:9.2p1 4900 libssl3,libc6 secure shell (SSH) client, for secure access to remote
sudo 1.9.13p3 6100 libc6 Provide limited super user privileges to specific users
tzdata 2024a 3400 - time zone and daylight-saving time data
vim-tiny 2:9.0.1378 1700 libc6 Vi IMproved - enhanced vi editor - compact version
nano 7.2 2500 libc6 small, friendly text editor inspired by Pico
less 590 420 libc6 pager program similar to more
curl 7.88.1 500 libcurl4 command line tool for transferring data with URL syntax
libcurl4 7.88.1 940 libssl3,zlib1g easy-to-use client-side URL transfer library (OpenSSL flavour)
wget 1.21.3 3800 libssl3 retrieves files from the web
iproute2 6.1.0 3900 libc6 networking and traffic control tools
iputils-ping 3:20221126 120 libc6 Tools to test the reachability of network hosts
cron 3.0pl1 260 libc6 process scheduling daemon
logrotate 3.21.0 160 cron Log rotation utility
rsyslog 8.2302.0 1600 libsystemd0 reliable system and kernel logging daemon
python3 3.11.2 90 python3.11 interactive high-level object-oriented language (default python3
python3.11 3.11.2 600 libexpat1,libssl3 Interactive high-level object-oriented language (version
perl-base 5.36.0 7700 libc6 minimal Perl system
util-linux 2.38.1 4300 libc6 miscellaneous system utilities
mount 2.38.1 420 util-linux tools for mounting and manipulating filesystems
e2fsprogs 1.47.0 1500 libc6 ext2/ext3/ext4 file system utilities
procps 2:4.0.2 2100 libc6 /proc file system utilities
login 1:4.13+dfsg1 2700 libc6 system login tools
passwd 1:4.13+dfsg1 2400 libc6 change and administer password and group data
init-system-helpers 1.65.2 130 perl-base helper tools for all init systems
gpgv 2.2.40 480 libc6 GNU privacy guard - signature verification tool
libgnutls30 3.7.9 3100 libc6 GNU TLS library - main runtime library
libsqlite3-0 3.40.1 1600 libc6 SQLite 3 shared library
libxml2 2.9.14 2100 liblzma5,zlib1g GNOME XML library
libkrb5-3 1.20.1 1100 libssl3 MIT Kerberos runtime libraries
libseccomp2 2.5.4 150 libc6 high level interface to Linux seccomp filter
libselinux1 3.4 200 libpcre2-8-0 SELinux runtime shared libraries
linux-patch-api 2.6.12 9800 libc6,libssl3,systemd Linux Patch API agent (mTLS patch management
"""),
    repo=_specs("""
hello 2.10 110 libc6 example package based on GNU hello
nginx 1.22.1 1400 nginx-common,libssl3,libpcre2-8-0 small, powerful, scalable web/proxy server
nginx-common 1.22.1 400 - small, powerful, scalable web/proxy server - common files
postgresql 15+248 70 postgresql-15 object-relational SQL database (supported version)
postgresql-15 15.8 52000 postgresql-client-15,postgresql-common,libpq5,libssl3 The World's Most
postgresql-client-15 15.8 5300 libpq5 front-end programs for PostgreSQL 15
postgresql-common 248 700 - PostgreSQL database-cluster manager
libpq5 15.8 1000 libssl3 PostgreSQL C client library
redis-server 5:7.0.15 200 redis-tools Persistent key-value database with network interface
redis-tools 5:7.0.15 5800 libjemalloc2,liblzf1 Persistent key-value database with network interface
libjemalloc2 5.3.0 700 libc6 general-purpose scalable concurrent malloc(3) implementation
liblzf1 3.6 60 libc6 Compression library
htop 3.2.2 400 libnl-3-200,libnl-genl-3-200,libncursesw6 interactive processes viewer
libnl-3-200 3.7.0 200 libc6 library for dealing with netlink sockets
libnl-genl-3-200 3.7.0 60 libnl-3-200 library for dealing with netlink sockets - generic netlink
libncursesw6 6.4 400 libc6 shared libraries for terminal handling (wide character support)
jq 1.6 100 libjq1 lightweight and flexible command-line JSON processor
libjq1 1.6 400 libonig5 lightweight and flexible command-line JSON processor - shared library
libonig5 6.9.8 600 libc6 regular expressions library
tmux 3.3a 1100 libevent-core-2.1-7,libutempter0 terminal multiplexer
libevent-core-2.1-7 2.1.12-stable 240 libc6 Asynchronous event notification library (core)
libutempter0 1.2.1 40 libc6 privileged helper for utmp/wtmp updates (runtime)
git 1:2.39.5 38000 git-man,liberror-perl,libcurl3-gnutls fast, scalable, distributed revision
git-man 1:2.39.5 2000 - fast, scalable, distributed revision control system (manual pages)
liberror-perl 0.17029 40 - Perl module for error/exception handling in an OO-ish way
libcurl3-gnutls 7.88.1 900 libgnutls30 easy-to-use client-side URL transfer library (GnuTLS flavour)
rsync 3.2.7 800 libpopt0,libxxhash0 fast, versatile, remote (and local) file-copying tool
libpopt0 1.19+dfsg 130 libc6 lib for parsing cmdline parameters
libxxhash0 0.8.1 200 libc6 shared library for xxhash
tree 2.1.0 110 libc6 displays an indented directory tree, in color
lsof 4.95.0 450 libc6 utility to list open files
strace 6.1 2300 libc6 System call tracer
unzip 6.0 500 libc6 De-archiver for .zip files
zip 3.0 600 libc6 Archiver for .zip files
haproxy 2.6.12 4200 libssl3,libpcre2-8-0 fast and reliable load balancing reverse proxy
rabbitmq-server 3.10.8 16000 erlang-base Advanced Message Queuing Protocol (AMQP) server
erlang-base 1:25.2.3+dfsg 11000 libssl3 Erlang/OTP virtual machine and base applications
prometheus-node-exporter 1.5.0 19000 - Prometheus exporter for machine metrics
chrony 4.3 650 libseccomp2 Versatile implementation of the Network Time Protocol
make 4.3 1400 libc6 utility for directing compilation
gcc 4:12.2.0 60 cpp compiler for the GNU C language (default version)
cpp 4:12.2.0 40 - GNU C preprocessor (cpp)
docker.io 20.10.24+dfsg1 90000 containerd,runc Linux container runtime
containerd 1.6.20 120000 runc open and reliable container runtime
runc 1.1.5 9000 libseccomp2 Open Container Project - runtime
"""),
    roles={"web": ("nginx",), "db": ("postgresql",), "cache": ("redis-server",),
           "mq": ("rabbitmq-server",), "build": ("git", "make", "gcc"), "edge": ("haproxy",),
           "mon": ("prometheus-node-exporter",), "app": ("docker.io",)},
    utilities=("htop", "jq", "tmux", "rsync", "tree", "lsof", "strace", "unzip", "zip", "git"),
)  # fmt: skip

_T64 = {
    "libapt-pkg6.0": "libapt-pkg6.0t64", "libssl3": "libssl3t64", "libcurl4": "libcurl4t64",
    "libgnutls30": "libgnutls30t64", "libevent-core-2.1-7": "libevent-core-2.1-7t64",
    "libcurl3-gnutls": "libcurl3t64-gnutls", "debian-archive-keyring": "ubuntu-keyring",
}  # fmt: skip

UBUNTU = Distro(
    id="ubuntu",
    family=APT,
    os="Ubuntu",
    os_version="24.04.1 LTS (Noble Numbat)",
    kernels=(
        Kernel("6.8.0-45-generic", {
            "linux-image-6.8.0-45-generic": "6.8.0-45.45", "linux-modules-6.8.0-45-generic":
            "6.8.0-45.45", "linux-image-generic": "6.8.0.45.45", "linux-generic": "6.8.0.45.45",
        }, "linux-image-6.8.0-45-generic"),
        Kernel("6.8.0-47-generic", {
            "linux-image-6.8.0-47-generic": "6.8.0-47.47", "linux-modules-6.8.0-47-generic":
            "6.8.0-47.47", "linux-image-generic": "6.8.0.47.47", "linux-generic": "6.8.0.47.47",
        }, "linux-image-6.8.0-47-generic", {
            "linux-generic": ("linux-image-generic",),
            "linux-image-generic": ("linux-image-6.8.0-47-generic",),
            "linux-image-6.8.0-47-generic": ("linux-modules-6.8.0-47-generic",),
        }),
    ),
    release=_ubuntu,
    extra_base=_specs("""
ubuntu-keyring 2023.11.28.1 60 - GnuPG keys of the Ubuntu archive
ubuntu-minimal 1.539 30 - Minimal core of Ubuntu
netplan.io 1.0.1 300 - Declarative network configuration for various backends
"""),
    upstream={"apt": "2.7.14", "libapt-pkg6.0": "2.7.14", "dpkg": "1.22.6", "base-files": "13",
              "bash": "5.2.21", "coreutils": "9.4", "grep": "3.11", "tar": "1.35",
              "xz-utils": "5.6.1+really5.4.5", "liblzma5": "5.6.1+really5.4.5",
              "zlib1g": "1:1.3.dfsg", "libzstd1": "1.5.5+dfsg2", "libc6": "2.39",
              "libc-bin": "2.39", "libgcc-s1": "14-20240412", "libssl3": "3.0.13",
              "openssl": "3.0.13", "ca-certificates": "20240203", "systemd": "255.4",
              "libsystemd0": "255.4", "systemd-sysv": "255.4", "systemd-timesyncd": "255.4",
              "udev": "255.4", "libexpat1": "2.6.1", "openssh-server": "1:9.6p1",
              "openssh-client": "1:9.6p1", "sudo": "1.9.15p5", "vim-tiny": "2:9.1.0016",
              "curl": "8.5.0", "libcurl4": "8.5.0", "wget": "1.21.4", "iproute2": "6.1.0",
              "python3": "3.12.3", "python3.11": "3.12.3", "perl-base": "5.38.2",
              "util-linux": "2.39.3", "mount": "2.39.3", "procps": "2:4.0.4",
              "gpgv": "2.4.4", "libgnutls30": "3.8.3", "hello": "2.10", "nginx": "1.24.0",
              "nginx-common": "1.24.0", "git": "1:2.43.0", "git-man": "1:2.43.0",
              "htop": "3.3.0", "jq": "1.7.1", "libjq1": "1.7.1", "tmux": "3.4",
              "haproxy": "2.8.5", "docker.io": "24.0.7", "containerd": "1.7.12",
              "runc": "1.1.12", "postgresql": "16+257", "postgresql-15": "16.4",
              "postgresql-client-15": "16.4", "libpq5": "16.4", "postgresql-common": "257",
              "linux-patch-api": AGENT_UPSTREAM},
    rename={**_T64, "python3.11": "python3.12", "postgresql-15": "postgresql-16",
            "postgresql-client-15": "postgresql-client-16"},
)  # fmt: skip

DEBIAN = Distro(
    id="debian",
    family=APT,
    os="Debian GNU/Linux",
    os_version="12 (bookworm)",
    kernels=(
        Kernel("6.1.0-26-amd64", {"linux-image-6.1.0-26-amd64": "6.1.112-1",
                                  "linux-image-amd64": "6.1.112-1"},
               "linux-image-6.1.0-26-amd64"),
        Kernel("6.1.0-27-amd64", {"linux-image-6.1.0-27-amd64": "6.1.115-1",
                                  "linux-image-amd64": "6.1.115-1"},
               "linux-image-6.1.0-27-amd64",
               {"linux-image-amd64": ("linux-image-6.1.0-27-amd64",)}),
    ),
    release=_debian,
    extra_base=_specs("""
debian-archive-keyring 2023.3+deb12u1 250 - GnuPG archive keys of the Debian archive
ifupdown 0.8.41 220 - high level tools to configure network interfaces
"""),
)  # fmt: skip

# -- dnf (Rocky Linux, Fedora) -------------------------------------------------------------------

DNF = Family(
    name="dnf",
    tool="dnf",
    command="dnf",
    arguments={"install": "install -y --", "update": "upgrade -y --", "remove": "remove -y --",
               "patch_apply": "upgrade -y --", "patch_all": "upgrade -y"},
    pin="-",
    not_found=(1, "Error: Unable to find a match: {pkg}"),
    protected=(1, "Error: \n Problem: The operation would result in removing the following "
                  "protected packages: {pkg}"),
    protected_names=frozenset({"dnf", "rpm", "glibc", "systemd", "bash", "coreutils", "sudo",
                               "yum", "python3-dnf", "kernel-core"}),
    failures={
        "NETWORK_ERROR": (1, "Error: Failed to download packages: Curl error (7): Couldn't "
                             "connect to server for https://mirror.example/{pkg}.rpm [Failed to "
                             "connect to mirror.example port 443: Connection refused]"),
        "GPG_ERROR": (1, "Error: GPG check FAILED"),
        "DEPENDENCY_CONFLICT": (1, "Error: \n Problem: package {pkg} requires libfoo.so.1()(64bit),"
                                   " but none of the providers can be installed"),
        "PERMISSION_DENIED": (1, "Error: This command has to be run with superuser privileges "
                                 "(under the root user on most systems)."),
        "PKG_MANAGER_ERROR": (1, "Error: Transaction test error:\n  file /usr/bin/{pkg} conflicts"
                                 " between attempted installs"),
        "CACHE_REFRESH_ERROR": (1, "Error: Failed to download metadata for repo 'baseos': Cannot "
                                   "download repomd.xml: All mirrors were tried"),
    },
    base=_specs("""
dnf 4.14.0 2200 python3-dnf,dnf-data Package manager
python3-dnf 4.14.0 2000 libdnf,rpm Python 3 interface to DNF
dnf-data 4.14.0 40 - Common data and configuration files for DNF
libdnf 0.69.0 2100 rpm-libs Library providing simplified C and Python API to libsolv
yum 4.14.0 70 dnf Package manager
rpm 4.16.1.3 2600 rpm-libs The RPM package management system
rpm-libs 4.16.1.3 700 zlib,xz-libs Libraries for manipulating RPM packages
bash 5.1.8 7700 glibc The GNU Bourne Again shell
coreutils 8.32 6000 glibc A set of basic GNU tools commonly used in shell scripts
glibc 2.34 6400 glibc-common The GNU libc libraries
glibc-common 2.34 1100 - Common binaries and locale data for glibc
grep 3.6 850 pcre2 Pattern matching utilities
sed 4.8 800 glibc A GNU stream text editor
gawk 5.1.0 1700 glibc The GNU version of the AWK text processing utility
tar 2:1.34 3100 glibc GNU file archiving program
gzip 1.12 400 glibc The GNU data compression program
xz 5.2.5 700 xz-libs LZMA compression utilities
xz-libs 5.2.5 200 glibc Libraries for decoding LZMA compression
zlib 1.2.11 200 glibc Compression and decompression library
pcre2 10.40 650 glibc Perl-compatible regular expression library
openssl 1:3.0.7 1900 openssl-libs Utilities from the general purpose cryptography library with TLS
openssl-libs 1:3.0.7 6500 glibc A general purpose cryptography library with TLS implementation
ca-certificates 2024.2.69_v8.0.303 2400 - The Mozilla CA root certificate bundle
systemd 252 12000 systemd-libs,openssl-libs System and Service Manager
systemd-libs 252 1800 glibc systemd libraries
systemd-udev 252 9000 systemd Rule-based device node and kernel event manager
dbus 1:1.12.20 60 dbus-broker D-BUS message bus
dbus-broker 28 400 glibc Linux D-Bus Message Broker
openssh 8.7p1 2000 openssl-libs An open source implementation of SSH protocol version 2
openssh-server 8.7p1 1100 openssh An open source SSH server daemon
openssh-clients 8.7p1 2700 openssh An open source SSH client applications
sudo 1.9.5p2 4100 glibc Allows restricted root access for specified users
tzdata 2024a 1700 - Timezone data
vim-minimal 2:8.2.2637 1500 glibc A minimal version of the VIM editor
less 590 380 glibc A text file browser similar to more, but better
curl 7.76.1 700 libcurl A utility for getting files from remote servers (FTP, HTTP, and others)
libcurl 7.76.1 700 openssl-libs A library for getting files from web servers
iproute 6.2.0 2100 glibc Advanced IP routing and network device configuration tools
chrony 4.5 650 glibc An NTP client/server
cronie 1.5.7 200 glibc Cron daemon for executing programs at set times
logrotate 3.18.0 150 glibc Rotates, compresses, removes and mails system log files
rsyslog 8.2310.0 2600 glibc Enhanced system logging and kernel message trapping daemon
python3 3.9.18 40 python3-libs Python 3.9 interpreter
python3-libs 3.9.18 32000 openssl-libs Python runtime libraries
util-linux 2.37.4 11000 glibc A collection of basic system utilities
e2fsprogs 1.46.5 2000 glibc Utilities for managing ext2, ext3, and ext4 file systems
procps-ng 3.3.17 900 glibc System and process monitoring utilities
shadow-utils 2:4.9 3800 glibc Utilities for managing accounts and shadow password files
firewalld 1.3.4 2700 python3 A firewall daemon with D-Bus interface providing a dynamic firewall
NetworkManager 1:1.46.0 6700 glibc Network connection manager and user applications
libxml2 2.9.13 1900 zlib,xz-libs Library providing XML and HTML support
sqlite-libs 3.34.1 1300 glibc Shared library for the sqlite3 embeddable SQL database engine
gnutls 3.8.3 3200 glibc A TLS protocol implementation
krb5-libs 1.21.1 2300 openssl-libs The non-admin shared libraries used by Kerberos 5
libselinux 3.6 200 pcre2 SELinux library and simple utilities
microcode_ctl 4:20240531 9000 - CPU microcode updates for Intel x86 processors
grub2-common 1:2.06 6900 - grub2 common layout
linux-patch-api 2.6.12 9800 glibc,openssl-libs,systemd Linux Patch API agent (mTLS patch management
"""),
    repo=_specs("""
hello 2.12.1 200 glibc Prints a familiar, friendly greeting
nginx 1:1.20.1 100 nginx-core,nginx-filesystem A high performance web server and reverse proxy
nginx-core 1:1.20.1 1800 nginx-filesystem,openssl-libs,pcre2 nginx minimal core
nginx-filesystem 1:1.20.1 10 - The basic directory layout for the Nginx server
postgresql-server 13.16 20000 postgresql,postgresql-private-libs The programs needed to create and
postgresql 13.16 6400 postgresql-private-libs PostgreSQL client programs
postgresql-private-libs 13.16 800 openssl-libs The shared libraries required only for this build of
redis 6.2.7 5100 glibc A persistent key-value database
htop 3.3.0 400 hwloc-libs Interactive process viewer
hwloc-libs 2.4.1 2900 glibc Run time libraries for the hwloc
jq 1.6 400 oniguruma Command-line JSON processor
oniguruma 6.9.6 700 glibc Regular expressions library
tmux 3.2a 1100 libevent A terminal multiplexer
libevent 2.1.12 900 openssl-libs Abstract asynchronous event notification library
git 2.43.5 90 git-core,perl-Git Fast Version Control System
git-core 2.43.5 35000 libcurl,openssl-libs Core package of git with minimal functionality
perl-Git 2.43.5 60 - Perl interface to Git
rsync 3.2.3 800 glibc A program for synchronizing files over a network
tree 1.8.0 110 glibc File system tree viewer
lsof 4.94.0 500 glibc A utility which lists open files on a Linux/UNIX system
strace 5.18 2700 glibc Tracks and displays system calls associated with a running process
unzip 6.0 400 glibc A utility for unpacking zip files
zip 3.0 800 glibc A file compression and packaging utility compatible with PKZIP
haproxy 2.4.22 5600 openssl-libs,pcre2 HAProxy reverse proxy for high availability environments
memcached 1.6.9 400 libevent High Performance, Distributed Memory Object Cache
node_exporter 1.7.0 19000 - Prometheus exporter for machine metrics
mariadb-server 3:10.5.22 60000 mariadb MariaDB database server
mariadb 3:10.5.22 30000 openssl-libs MariaDB client programs and utilities
make 1:4.3 1600 glibc A GNU tool which simplifies the build process for users
gcc 11.4.1 80000 cpp,glibc-devel Various compilers (C, C++, Objective-C, ...)
cpp 11.4.1 10000 glibc The C Preprocessor
glibc-devel 2.34 100 glibc Object files for development using standard C libraries
podman 4:4.9.4 50000 conmon,containers-common A tool for managing OCI containers and pods
conmon 3:2.1.10 170 glibc OCI container runtime monitor
containers-common 2:1 200 - Common configuration and documentation for containers
"""),
    roles={"web": ("nginx",), "db": ("postgresql-server",), "cache": ("redis",),
           "mq": ("memcached",), "build": ("git", "make", "gcc"), "edge": ("haproxy",),
           "mon": ("node_exporter",), "app": ("podman",)},
    utilities=("htop", "jq", "tmux", "rsync", "tree", "lsof", "strace", "unzip", "zip", "git"),
)  # fmt: skip

ROCKY = Distro(
    id="rocky",
    family=DNF,
    os="Rocky Linux 9.4 (Blue Onyx)",
    os_version="9.4",
    kernels=(
        Kernel("5.14.0-427.13.1.el9_4.x86_64",
               {n: "5.14.0-427.13.1.el9_4" for n in ("kernel", "kernel-core", "kernel-modules",
                                                      "kernel-modules-core", "kernel-tools")},
               "kernel-core"),
        Kernel("5.14.0-427.42.1.el9_4.x86_64",
               {n: "5.14.0-427.42.1.el9_4" for n in ("kernel", "kernel-core", "kernel-modules",
                                                      "kernel-modules-core", "kernel-tools")},
               "kernel-core"),
    ),
    release=_el9,
    extra_base=_specs("""
rocky-release 9.4 90 rocky-repos Rocky Linux release files
rocky-repos 9.4 40 rocky-gpg-keys Rocky Linux Package Repositories
rocky-gpg-keys 9.4 20 - Rocky Linux RPM keys
"""),
)  # fmt: skip

FEDORA = Distro(
    id="fedora",
    family=DNF,
    os="Fedora Linux 40 (Server Edition)",
    os_version="40",
    kernels=(
        Kernel("6.10.6-200.fc40.x86_64", {n: "6.10.6-200.fc40" for n in
                                          ("kernel", "kernel-core", "kernel-modules",
                                           "kernel-modules-core")}, "kernel-core"),
        Kernel("6.11.5-200.fc40.x86_64", {n: "6.11.5-200.fc40" for n in
                                          ("kernel", "kernel-core", "kernel-modules",
                                           "kernel-modules-core")}, "kernel-core"),
    ),
    release=_fc40,
    extra_base=_specs("""
fedora-release-common 40 20 fedora-repos Fedora release files
fedora-repos 40 30 fedora-gpg-keys Fedora package repositories
fedora-gpg-keys 40 120 - Fedora RPM keys
"""),
    upstream={"dnf": "4.21.1", "python3-dnf": "4.21.1", "dnf-data": "4.21.1", "yum": "4.21.1",
              "libdnf": "0.73.3", "rpm": "4.19.1.1", "rpm-libs": "4.19.1.1", "bash": "5.2.26",
              "coreutils": "9.4", "glibc": "2.39", "glibc-common": "2.39", "grep": "3.11",
              "systemd": "255.12", "systemd-libs": "255.12", "systemd-udev": "255.12",
              "openssl": "1:3.2.2", "openssl-libs": "1:3.2.2", "openssh": "9.6p1",
              "openssh-server": "9.6p1", "openssh-clients": "9.6p1", "sudo": "1.9.15",
              "curl": "8.6.0", "libcurl": "8.6.0", "python3": "3.12.5", "python3-libs": "3.12.5",
              "nginx": "2:1.26.2", "nginx-core": "2:1.26.2", "nginx-filesystem": "2:1.26.2",
              "postgresql-server": "16.4", "postgresql": "16.4",
              "postgresql-private-libs": "16.4", "git": "2.46.2", "git-core": "2.46.2",
              "perl-Git": "2.46.2", "redis": "7.2.5", "tmux": "3.4", "jq": "1.7.1"},
)  # fmt: skip

# -- apk (Alpine) ----------------------------------------------------------------------------------

APK = Family(
    name="apk",
    tool="apk-tools",
    command="apk",
    arguments={"install": "add --", "update": "upgrade --", "remove": "del --",
               "patch_apply": "upgrade --", "patch_all": "upgrade"},
    pin="",  # the repository carries one version per package
    not_found=(1, "ERROR: unable to select packages:\n  {pkg} (no such package):\n    "
                  "required by: world[{pkg}]"),
    protected=(1, "World updated, but the following packages are not removed due to:\n  "
                  "{pkg}: {by}"),
    protected_names=frozenset({"apk-tools", "alpine-base", "busybox", "musl", "alpine-baselayout",
                               "openrc"}),
    failures={
        "NETWORK_ERROR": (1, "ERROR: {pkg}: network error (check Internet connection and "
                             "firewall)"),
        "GPG_ERROR": (1, "ERROR: {pkg}: UNTRUSTED signature"),
        "DEPENDENCY_CONFLICT": (1, "ERROR: unable to select packages:\n  {pkg}:\n    "
                                   "breaks: world[{pkg}]"),
        "PERMISSION_DENIED": (1, "ERROR: Unable to lock database: Permission denied"),
        "PKG_MANAGER_ERROR": (1, "ERROR: {pkg}: failed to extract usr/bin/{pkg}: I/O error"),
        "CACHE_REFRESH_ERROR": (1, "WARNING: fetching https://dl-cdn.alpinelinux.org/alpine/"
                                   "v3.20/main: temporary error (try again later)"),
    },
    base=_specs("""
alpine-base 3.20.3 10 alpine-baselayout,alpine-conf,alpine-release,apk-tools,busybox,openrc Meta
alpine-baselayout 3.6.5 10 alpine-baselayout-data Alpine base dir structure and init scripts
alpine-baselayout-data 3.6.5 20 - Alpine base dir structure and init scripts
alpine-conf 3.18.0 200 - Alpine configuration management scripts
alpine-keys 2.4 100 - Public keys for Alpine Linux packages
alpine-release 3.20.3 30 alpine-keys Alpine release data
apk-tools 2.14.4 250 libcrypto3,libssl3,musl,zlib Alpine Package Keeper - package manager for alpine
busybox 1.36.1 900 musl Size optimized toolbox of many common UNIX utilities
busybox-binsh 1.36.1 10 busybox busybox ash /bin/sh
ca-certificates-bundle 20240705 230 - Pre generated bundle of Mozilla certificates
libcrypto3 3.3.2 4400 musl Crypto library from openssl
libssl3 3.3.2 700 libcrypto3 SSL shared libraries
musl 1.2.5 650 - the musl c library (libc) implementation
musl-utils 1.2.5 130 musl the musl c library (libc) implementation
openrc 0.54 1000 - OpenRC manages the services, startup and shutdown of a host
scanelf 1.3.7 80 musl Scan ELF binaries for stuff
ssl_client 1.36.1 20 libssl3 EXternal ssl_client for busybox wget
zlib 1.3.1 100 musl A compression/decompression Library
libc-utils 0.7.2 10 musl-utils Meta package to pull in correct libc
ifupdown-ng 0.12.1 200 - tools for managing network configuration
openssh-server 9.7_p1 500 openssh-keygen,libcrypto3 OpenSSH server
openssh-client-default 9.7_p1 1400 libcrypto3 OpenSSH client
openssh-keygen 9.7_p1 500 libcrypto3 ssh helper program for generating keys
chrony 4.5 350 musl NTP client and server programs
tzdata 2024b 600 - Timezone data
mkinitfs 3.10.1 70 busybox Tool to generate initramfs images for Alpine
linux-patch-api 2.6.12 9800 musl,libssl3,openrc Linux Patch API agent (mTLS patch management
"""),
    repo=_specs("""
hello 2.12.1 60 musl Prints a familiar, friendly greeting
nginx 1.26.2 1400 pcre2,libssl3 HTTP and reverse proxy server (stable version)
pcre2 10.43 700 musl Perl-compatible regular expression library
postgresql16 16.4 25000 postgresql-common,libpq,postgresql16-client A sophisticated
postgresql16-client 16.4 1800 libpq PostgreSQL client
postgresql-common 1.2 20 - Common files for PostgreSQL
libpq 16.4 300 libssl3 PostgreSQL client library
redis 7.2.6 2100 musl Advanced key-value store
htop 3.3.0 300 ncurses-libs Interactive process viewer
ncurses-libs 6.4_p20240420 300 musl Ncurses libraries
jq 1.7.1 400 oniguruma A lightweight and flexible command-line JSON processor
oniguruma 6.9.9 500 musl a regular expressions library
tmux 3.4 700 libevent,ncurses-libs Tool to control multiple terminals from a single terminal
libevent 2.1.12 400 musl An event notification library
git 2.45.2 14000 libcurl,pcre2,libexpat Distributed version control system
libcurl 8.10.1 500 nghttp2-libs,brotli-libs The multiprotocol file transfer library
nghttp2-libs 1.62.1 150 musl Experimental HTTP/2 client, server and proxy (libraries)
brotli-libs 1.1.0 800 musl Generic lossless compressor (libraries)
libexpat 2.6.3 150 musl XML Parser library written in C
curl 8.10.1 260 libcurl URL retrival utility and library
bash 5.2.26 1200 readline The GNU Bourne Again shell
readline 8.2.10 300 ncurses-libs GNU readline library
rsync 3.3.0 700 musl A file transfer program to keep remote files in sync
tree 2.1.1 80 musl A recursive directory indented listing of files
lsof 4.99.3 200 musl LiSt Open Files
strace 6.9 1500 musl Diagnostic, debugging and instructional userspace tracer
unzip 6.0 300 musl Extract PKZIP-compatible .zip files
zip 3.0 400 musl Creates PKZIP-compatible .zip files
haproxy 2.8.10 3000 pcre2,libssl3 A TCP/HTTP reverse proxy for high availability environments
rabbitmq-server 3.13.7 30000 erlang Highly reliable and performant enterprise messaging
erlang 26.2.5.3 60000 libssl3 General-purpose programming language and runtime environment
prometheus-node-exporter 1.8.1 18000 - Prometheus exporter for machine metrics
make 4.4.1 300 musl GNU make utility to maintain groups of programs
gcc 13.2.1_git20240309 100000 musl The GNU Compiler Collection
docker 26.1.5 60000 containerd,runc Pack, ship and run any application as a lightweight container
containerd 1.7.17 100000 runc An open and reliable container runtime
runc 1.1.14 9000 musl CLI tool for spawning and running containers according to the OCI
sudo 1.9.15_p5 3000 musl Give certain users the ability to run some commands as root
vim 9.1.0414 3000 ncurses-libs Improved vi-style text editor
"""),
    roles={"web": ("nginx",), "db": ("postgresql16",), "cache": ("redis",),
           "mq": ("rabbitmq-server",), "build": ("git", "make", "gcc"), "edge": ("haproxy",),
           "mon": ("prometheus-node-exporter",), "app": ("docker",)},
    utilities=("htop", "jq", "tmux", "rsync", "tree", "lsof", "strace", "bash", "curl", "sudo"),
)  # fmt: skip

ALPINE = Distro(
    id="alpine",
    family=APK,
    os="Alpine Linux v3.20",  # PRETTY_NAME
    os_version="3.20.3",
    kernels=(
        Kernel("6.6.52-0-lts", {"linux-lts": "6.6.52-r0"}, "linux-lts"),
        Kernel("6.6.58-0-lts", {"linux-lts": "6.6.58-r0"}, "linux-lts"),
    ),
    release=_alpine,
)

# -- pacman (Arch) ---------------------------------------------------------------------------------

PACMAN = Family(
    name="pacman",
    tool="pacman",
    command="pacman",
    arguments={"install": "-S --noconfirm --needed --", "update": "-S --noconfirm --",
               "remove": "-R --noconfirm --", "patch_apply": "-S --noconfirm --",
               "patch_all": "-Syu --noconfirm"},
    pin="",  # the agent pushes only the name; the repository carries one version
    not_found=(1, "error: target not found: {pkg}"),
    protected=(1, "error: failed to prepare transaction (could not satisfy dependencies)\n:: "
                  "removing {pkg} breaks dependency '{pkg}' required by {by}"),
    protected_names=frozenset({"pacman", "base", "glibc", "bash", "coreutils", "systemd",
                               "filesystem"}),
    failures={
        "NETWORK_ERROR": (1, "error: failed retrieving file '{pkg}.pkg.tar.zst' from "
                             "mirror.example : The requested URL returned error: 404"),
        "GPG_ERROR": (1, "error: {pkg}: signature from \"Packager <p@example.org>\" is unknown "
                         "trust"),
        "DEPENDENCY_CONFLICT": (1, "error: failed to prepare transaction (could not satisfy "
                                   "dependencies)\n:: installing {pkg} breaks dependency"),
        "PERMISSION_DENIED": (1, "error: failed to init transaction (unable to lock database)\n"
                                 "error: could not lock database: Permission denied"),
        "PKG_MANAGER_ERROR": (1, "error: failed to commit transaction (conflicting files)\n"
                                 "{pkg}: /usr/bin/{pkg} exists in filesystem"),
        "CACHE_REFRESH_ERROR": (1, "error: failed to synchronize all databases (unexpected "
                                   "error)"),
    },
    base=_specs("""
base 3 10 filesystem,gcc-libs,glibc,bash,coreutils,pacman,systemd Minimal package set to define a
filesystem 2024.04.07 30 - Base Arch Linux files
bash 5.2.037 9300 glibc The GNU Bourne Again shell
coreutils 9.5 17000 glibc The basic file, shell and text manipulation utilities of the GNU operating
glibc 2.40+r16+gaa533d58ff 47000 filesystem GNU C Library
gcc-libs 14.2.1+r134+gab884fffe3fc 150000 glibc Runtime libraries shipped by GCC
grep 3.11 900 pcre2 A string search utility
gzip 1.13 160 bash GNU compression utility
iproute2 6.11.0 2100 glibc IP Routing Utilities
iputils 20240905 200 libcap Network monitoring tools, including ping
libcap 2.70 300 glibc POSIX 1003.1e capabilities
less 1:668 400 pcre2 A terminal based program for viewing text files
pacman 7.0.0.r3.g7736133 4800 archlinux-keyring,pacman-mirrorlist,curl A library-based package
pacman-mirrorlist 20241012 30 - Arch Linux mirror list for use by pacman
archlinux-keyring 20241015 1500 - Arch Linux PGP keyring
pcre2 10.44 3700 glibc A library that implements Perl 5-style regular expressions
procps-ng 4.0.4 2400 glibc Utilities for monitoring your system and its processes
sed 4.9 900 glibc GNU stream editor
shadow 4.16.0 4000 glibc Password and account management tool suite with support for shadow files
systemd 256.7 30000 systemd-libs The system and service manager
systemd-libs 256.7 3600 glibc systemd client libraries
systemd-sysvcompat 256.7 10 systemd sysvinit compat for systemd
tar 1.35 2900 glibc Utility used to store, backup, and transport files
util-linux 2.40.2 16000 util-linux-libs Miscellaneous system utilities for Linux
util-linux-libs 2.40.2 1600 glibc util-linux runtime libraries
xz 5.6.3 1600 glibc Library and command line tools for XZ and LZMA compressed files
zlib 1:1.3.1 300 glibc Compression library implementing the deflate compression method found in gzip
zstd 1.5.6 2500 zlib Zstandard - Fast real-time compression algorithm
openssl 3.4.0 9700 glibc The Open Source toolkit for Secure Sockets Layer and Transport Layer
ca-certificates 20240618 10 - Common CA certificates (default providers)
curl 8.10.1 1800 openssl,zlib command line tool and library for transferring data with URLs
dbus 1.14.10 1000 systemd-libs Freedesktop.org message bus system
openssh 9.9p1 5600 openssl SSH protocol implementation for remote login, command execution and file
sudo 1.9.16 4700 glibc Give certain users the ability to run some commands as root
tzdata 2024b 1700 - Sources for time zone and daylight saving time data
vim 9.1.0866 4000 glibc Vi Improved, a highly configurable, improved version of the vi text editor
nano 8.2 2600 glibc Pico editor clone with enhancements
python 3.12.7 100000 openssl Next generation of the python high-level scripting language
perl 5.40.0 60000 glibc A highly capable, feature-rich programming language
grub 2:2.12 30000 - GNU GRand Unified Bootloader (2)
intel-ucode 20240910 8000 - Microcode update files for Intel CPUs
linux-patch-api 2.6.12 9800 glibc,openssl,systemd Linux Patch API agent (mTLS patch management
"""),
    repo=_specs("""
hello 2.12.1 150 glibc Prints a familiar, friendly greeting
nginx 1.26.2 1300 pcre2,openssl,mailcap Lightweight HTTP server and IMAP/POP3 proxy server
mailcap 2.1.54 100 - Helper application and MIME type associations for file types
postgresql 16.4 60000 postgresql-libs,libxml2 Sophisticated object-relational DBMS
postgresql-libs 16.4 8000 openssl Libraries for use with PostgreSQL
libxml2 2.13.4 5000 zlib XML C parser and toolkit
valkey 8.0.1 5000 openssl A new project to resume development on the formerly open-source Redis
htop 3.3.0 500 libnl Interactive process viewer
libnl 3.11.0 1300 glibc Library for applications dealing with netlink sockets
jq 1.7.1 700 oniguruma Command-line JSON processor
oniguruma 6.9.9 900 glibc a regular expressions library
tmux 3.5 1100 libevent,libutempter Terminal multiplexer
libevent 2.1.12 1100 openssl Event notification library
libutempter 1.2.1 30 glibc Interface for terminal emulators such as screen and xterm to record user
git 2.47.0 40000 perl-error,curl,pcre2 the fast distributed version control system
perl-error 0.17029 60 perl Perl/CPAN Error module - Error/exception handling in an OO-ish way
rsync 3.3.0 700 popt,xxhash A fast and versatile file copying tool for remote and local files
popt 1.19 300 glibc A commandline option parser
xxhash 0.8.2 400 glibc Extremely fast non-cryptographic hash algorithm
tree 2.1.3 110 glibc A directory listing program displaying a depth indented list of files
lsof 4.99.4 300 glibc Lists open files for running Unix processes
strace 6.11 2600 glibc A diagnostic, debugging and instructional userspace tracer
unzip 6.0 400 bash For extracting and viewing files in .zip archives
zip 3.0 600 bash Compressor/archiver for creating and modifying zipfiles
haproxy 3.0.5 5800 openssl,pcre2 Reliable, high performance TCP/HTTP load balancer
rabbitmq 4.0.2 30000 erlang-nox Highly reliable and performant enterprise messaging implementation
erlang-nox 27.1.2 70000 openssl General-purpose concurrent functional programming language
prometheus-node-exporter 1.8.2 20000 - Exporter for machine metrics
make 4.4.1 1600 glibc GNU make utility to maintain groups of programs
gcc 14.2.1+r134+gab884fffe3fc 200000 gcc-libs The GNU Compiler Collection - C and C++ frontends
docker 1:27.3.1 90000 containerd,runc Pack, ship and run any application as a lightweight container
containerd 1.7.23 120000 runc An open and reliable container runtime
runc 1.2.0 10000 libseccomp CLI tool for managing OCI compliant containers
libseccomp 2.5.5 300 glibc Enhanced seccomp library
chrony 4.6.1 800 libcap Lightweight NTP client and server
"""),
    roles={"web": ("nginx",), "db": ("postgresql",), "cache": ("valkey",), "mq": ("rabbitmq",),
           "build": ("git", "make", "gcc"), "edge": ("haproxy",),
           "mon": ("prometheus-node-exporter",), "app": ("docker",)},
    utilities=("htop", "jq", "tmux", "rsync", "tree", "lsof", "strace", "unzip", "zip", "git"),
)  # fmt: skip

ARCH = Distro(
    id="arch",
    family=PACMAN,
    os="Arch Linux",
    os_version="unknown",  # os-release has no VERSION_ID
    kernels=(
        Kernel("6.10.10-arch1-1", {"linux": "6.10.10.arch1-1"}, "linux"),
        Kernel("6.11.5-arch1-1", {"linux": "6.11.5.arch1-1"}, "linux"),
    ),
    release=_arch,
)

DISTROS: tuple[Distro, ...] = (UBUNTU, DEBIAN, ROCKY, FEDORA, ALPINE, ARCH)
DISTRO_WEIGHTS = (40, 20, 20, 8, 7, 5)
BY_ID: dict[str, Distro] = {d.id: d for d in DISTROS}


def _renamed(distro: Distro, spec: Spec) -> Spec:
    rename = distro.rename
    upstream = distro.upstream.get(spec.name, spec.upstream)
    return Spec(rename.get(spec.name, spec.name), upstream, spec.size_kb,
                tuple(rename.get(d, d) for d in spec.dependencies), spec.description)  # fmt: skip


_AGENT_REVISION = {"ubuntu": "-1", "debian": "-1", "rocky": "-1.el9", "fedora": "-1.fc40",
                   "alpine": "-r0", "arch": "-1"}  # fmt: skip


def _agent_version(distro: Distro) -> tuple[str, ...]:
    """The agent's own package comes from the manager's repository, not the distribution's:
    one version everywhere, in the family's format (a self-update offers a newer one)."""
    return (f"{AGENT_UPSTREAM}{_AGENT_REVISION[distro.id]}",)


@cache
def _catalog(distro_id: str) -> dict[str, Pkg]:
    distro = BY_ID[distro_id]
    family = distro.family
    catalog: dict[str, Pkg] = {}
    for raw in (*family.base, *distro.extra_base, *family.repo):
        spec = _renamed(distro, raw)
        versions: tuple[str, ...] = (distro.release(spec, 0), distro.release(spec, 1))
        if spec.name == SELF:
            versions = _agent_version(distro)
        epoch = _split_epoch(spec.upstream)[0] if family.name == "dnf" else ""
        previous = versions[0] if len(versions) > 1 else None
        if family.name in ("apk", "pacman"):
            versions = versions[-1:]  # one version per package in the repository
        catalog[spec.name] = Pkg(spec.name, versions, spec.description, spec.dependencies,
                                 spec.size_kb, epoch, previous)  # fmt: skip
    running, newer = distro.kernels
    for name in sorted({*running.packages, *newer.packages}):
        versions = tuple(
            dict.fromkeys(v for v in (running.packages.get(name), newer.packages.get(name)) if v)
        )
        depends = newer.depends.get(name, running.depends.get(name, ()))
        previous = versions[0] if len(versions) > 1 else None
        if family.name in ("apk", "pacman"):
            versions = versions[-1:]
        catalog[name] = Pkg(name, versions, f"Linux kernel ({name})", depends, 150_000,
                            previous=previous)  # fmt: skip
    return catalog


@cache
def _base_names(distro_id: str) -> tuple[str, ...]:
    distro = BY_ID[distro_id]
    names = [distro.rename.get(s.name, s.name) for s in (*distro.family.base, *distro.extra_base)]
    return (*names, *distro.kernels[0].packages)


def running_kernel(distro: Distro, installed: Mapping[str, str]) -> str | None:
    """The kernel a host boots into: the newest build whose image package is installed."""
    for kernel in reversed(distro.kernels):
        if installed.get(kernel.image) == kernel.packages[kernel.image]:
            return kernel.release
    return None


__all__ = ["BY_ID", "DISTROS", "DISTRO_WEIGHTS", "SELF", "Distro", "Family", "Kernel", "Pkg",
           "running_kernel"]  # fmt: skip
