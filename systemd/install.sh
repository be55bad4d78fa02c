#!/usr/bin/env bash
# Install or remove camera-agent as a systemd service (called by `make install` / `make uninstall`).
#
#   systemd/install.sh install   [DESTDIR=] [PREFIX=/opt/camera-agent] [PROFILE=id] [HW_JSON=file]
#   systemd/install.sh uninstall [DESTDIR=] [PREFIX=/opt/camera-agent] [PURGE=1]
#
# Settings come from the environment: DESTDIR (staging root: nothing is started and no path
# inside the installed files names it), PREFIX, PROFILE (hardware profile id for the resource
# limits; default: detected on this box), HW_JSON (a `camera-agent hw --json` document to use
# instead), INSTALL_PYTHON (base interpreter of the venv), PIP_ARGS (extra `pip install`
# arguments, e.g. --no-index --find-links DIR), PURGE=1 (uninstall also removes the config,
# the state, the logs and the user). See docs/install.md.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
UNIT=camera-agent.service
USER_NAME=camera-agent
DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
PREFIX=${PREFIX:-/opt/camera-agent}
PREFIX=${PREFIX%/}
PROFILE=${PROFILE:-}
HW_JSON=${HW_JSON:-}
PURGE=${PURGE:-}
PIP_ARGS=${PIP_ARGS:-}
if [ -z "${INSTALL_PYTHON:-}" ]; then
    # The distribution's interpreter: the service cannot see /home or /root (ProtectHome=yes).
    if [ -x /usr/bin/python3 ]; then INSTALL_PYTHON=/usr/bin/python3; else INSTALL_PYTHON=python3; fi
fi

# Where things go (vendor files under /usr/local/lib, host configuration under /etc).
UNIT_DIR=/usr/local/lib/systemd/system
DROPIN_DIR=/etc/systemd/system/$UNIT.d
SYSUSERS=/usr/local/lib/sysusers.d/camera-agent.conf
TMPFILES=/usr/local/lib/tmpfiles.d/camera-agent.conf
CONF_DIR=/etc/camera-agent
STATE_DIR=/var/lib/camera-agent
LOG_DIR=/var/log/camera-agent
INSTALL_ROOT=$STATE_DIR/install
VENV=$PREFIX/venv

say() { printf 'camera-agent install: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
systemd_running() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; }
is_root() { [ "$(id -u)" = 0 ]; }

case "$PREFIX" in /*) ;; *) die "PREFIX must be an absolute path, got '$PREFIX'" ;; esac
if [ -z "$DESTDIR" ] && ! is_root; then
    die "run as root (sudo make install), or stage into a directory with DESTDIR=..."
fi

# Numeric id of a user or group in DESTDIR's passwd/group file (empty when unknown).
lookup_id() {
    local file=$DESTDIR/etc/$1
    [ -f "$file" ] || return 0
    awk -F: -v n="$USER_NAME" '$1 == n { print $3; exit }' "$file"
}

# Give paths (recursively) to the service user (as root, when the user exists there).
chown_service() {
    is_root || return 0
    local uid gid
    uid=$(lookup_id passwd)
    gid=$(lookup_id group)
    if [ -n "$uid" ] && [ -n "$gid" ]; then chown -R "$uid:$gid" "$@"; fi
}

make_venv() {
    local venv=$DESTDIR$VENV
    say "virtual environment $venv (base $INSTALL_PYTHON)"
    mkdir -p "$(dirname "$venv")"
    "$INSTALL_PYTHON" -m venv --clear "$venv"
    # shellcheck disable=SC2086  # PIP_ARGS is a list of words
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile \
        $PIP_ARGS "$SRC"
    install -d -m 0755 "$DESTDIR$PREFIX/doc"
    install -m 0644 "$SRC/docs/install.md" "$SRC/docs/updates.md" "$DESTDIR$PREFIX/doc/"
}

# With DESTDIR, venv/bin scripts and pyvenv.cfg name the staging path: rewrite them to the final
# one, and compile the bytecode with the final paths (the venv is read-only to the service).
relocate_venv() {
    local venv=$DESTDIR$VENV
    if [ -n "$DESTDIR" ]; then
        "$venv/bin/python" - "$venv" "$DESTDIR$VENV" "$VENV" <<'PY'
import sys
from pathlib import Path

venv, staged, final = Path(sys.argv[1]), sys.argv[2].encode(), sys.argv[3].encode()
for path in [*sorted((venv / "bin").iterdir()), venv / "pyvenv.cfg"]:
    if path.is_symlink() or not path.is_file():
        continue
    data = path.read_bytes()
    if staged in data and b"\0" not in data[:1024]:
        path.write_bytes(data.replace(staged, final))
PY
    fi
    # ensurepip's bytecode names the staging path: compile everything again.
    find "$venv/lib" -name __pycache__ -type d -prune -exec rm -rf {} +
    "$venv/bin/python" -m compileall -q -j 0 -d "$VENV/lib" "$venv/lib" >/dev/null
}

install_units() {
    say "units: $UNIT_DIR/$UNIT, $SYSUSERS, $TMPFILES"
    install -d -m 0755 "$DESTDIR$UNIT_DIR" "$(dirname "$DESTDIR$SYSUSERS")" \
        "$(dirname "$DESTDIR$TMPFILES")"
    sed -e "s|/opt/camera-agent|$PREFIX|g" "$SRC/systemd/$UNIT" >"$DESTDIR$UNIT_DIR/$UNIT"
    chmod 0644 "$DESTDIR$UNIT_DIR/$UNIT"
    install -m 0644 "$SRC/systemd/camera-agent.sysusers" "$DESTDIR$SYSUSERS"
    install -m 0644 "$SRC/systemd/camera-agent.tmpfiles" "$DESTDIR$TMPFILES"
}

make_user() {
    if ! command -v systemd-sysusers >/dev/null; then
        say "systemd-sysusers not found: create the system user $USER_NAME yourself"
        return 0
    fi
    if [ -n "$DESTDIR" ]; then
        if is_root; then
            install -d -m 0755 "$DESTDIR/etc"
            systemd-sysusers --root="$DESTDIR" "$DESTDIR$SYSUSERS"
        fi
    else
        systemd-sysusers "$SYSUSERS"
    fi
}

install_config() {
    local conf=$DESTDIR$CONF_DIR
    install -d -m 0755 "$conf" "$conf/trust"
    if [ -e "$conf/agent.toml" ]; then
        say "keeping the existing $CONF_DIR/agent.toml"
    else
        say "default config $CONF_DIR/agent.toml"
        install -m 0640 "$SRC/systemd/agent.toml" "$conf/agent.toml"
        local gid
        gid=$(lookup_id group)
        if is_root && [ -n "$gid" ]; then chgrp "$gid" "$conf/agent.toml"; fi
    fi
    install -d -m 0700 "$DESTDIR$STATE_DIR"
    install -d -m 0750 "$DESTDIR$LOG_DIR"
}

# The first release: the agent just installed into the venv, unless a signed release that came
# as an update is current (kept). A previous local release is refreshed from the new venv.
first_release() {
    local root=$DESTDIR$INSTALL_ROOT current=""
    if [ -L "$root/current" ]; then current=$(readlink "$root/current"); fi
    case "$current" in
    "") ;;
    *-local) rm -rf "${root:?}/${current:?}" ;;
    *)
        say "keeping the current release $(basename "$current") (installed by an update)"
        return 0
        ;;
    esac
    "$DESTDIR$VENV/bin/camera-agent" update --config "$DESTDIR$CONF_DIR/agent.toml" \
        --root "$root" bootstrap --local
}

# camera-agent.service.d/10-profile.conf: the hardware profile's resource limits.
profile_dropin() {
    local json out=$DESTDIR$DROPIN_DIR/10-profile.conf
    if [ -n "$HW_JSON" ]; then
        json=$(cat "$HW_JSON")
    elif [ -n "$PROFILE" ]; then
        json=$("$DESTDIR$VENV/bin/camera-agent" hw --json --profile "$PROFILE") ||
            die "unknown hardware profile '$PROFILE' (camera-agent hw --list)"
    elif ! json=$("$DESTDIR$VENV/bin/camera-agent" hw --json); then
        say "no hardware profile detected: no resource limits (rerun with PROFILE=id)"
        return 0
    fi
    install -d -m 0755 "$DESTDIR$DROPIN_DIR"
    printf '%s' "$json" | "$DESTDIR$VENV/bin/python" -c '
import json, re, sys

doc = json.load(sys.stdin)
limits = doc["profile"]["limits"]
memory, cpu, name = str(limits["memory_max"]), str(limits["cpu_quota"]), str(doc["id"])
if not re.fullmatch(r"[0-9]+[KMGT]?|[0-9]+(\.[0-9]+)?%|infinity", memory):
    sys.exit(f"bad memory_max {memory!r}")
if not re.fullmatch(r"[0-9]+(\.[0-9]+)?%", cpu):
    sys.exit(f"bad cpu_quota {cpu!r}")
lines = [
    f"# Hardware profile {name}: written by make install (systemd/install.sh).",
    "[Service]",
    f"MemoryMax={memory}",
    f"CPUQuota={cpu}",
]
if limits.get("private_devices") is False:
    # Hardware codecs (V4L2 M2M, /dev/video*): only those nodes, through the video group,
    # which a private user namespace would leave unmapped.
    lines += [
        "PrivateDevices=no",
        "DeviceAllow=char-video4linux rw",
        "SupplementaryGroups=video",
        "PrivateUsers=no",
    ]
print("\n".join(lines))
' >"$out.tmp" || { rm -f "$out.tmp"; die "cannot write the profile drop-in"; }
    mv "$out.tmp" "$out"
    chmod 0644 "$out"
    say "resource limits: $DROPIN_DIR/10-profile.conf"
}

activate() {
    if [ -n "$DESTDIR" ]; then
        systemctl --root="$DESTDIR" enable "$UNIT"
        return 0
    fi
    if command -v systemd-tmpfiles >/dev/null; then systemd-tmpfiles --create "$TMPFILES"; fi
    chown_service "$STATE_DIR" "$LOG_DIR"
    if systemd_running; then
        systemctl daemon-reload
        systemctl enable "$UNIT"
        systemctl restart "$UNIT"
        say "started: systemctl status camera-agent"
    else
        systemctl enable "$UNIT"
        say "systemd is not running here: the service starts at the next boot"
    fi
}

do_install() {
    install_units
    make_user
    make_venv
    install_config
    first_release
    profile_dropin
    relocate_venv
    chown_service "$DESTDIR$STATE_DIR" "$DESTDIR$LOG_DIR"
    activate
    say "done: edit $CONF_DIR/agent.toml, put the update key in $CONF_DIR/trust/"
}

do_uninstall() {
    if [ -n "$DESTDIR" ]; then
        if [ -e "$DESTDIR$UNIT_DIR/$UNIT" ]; then systemctl --root="$DESTDIR" disable "$UNIT"; fi
    elif systemd_running; then
        systemctl disable --now "$UNIT" 2>/dev/null || true
    else
        systemctl disable "$UNIT" 2>/dev/null || true
    fi
    rm -rf "$DESTDIR$VENV" "$DESTDIR$PREFIX/doc"
    rmdir "$DESTDIR$PREFIX" 2>/dev/null || true
    rm -f "$DESTDIR$UNIT_DIR/$UNIT" "$DESTDIR$DROPIN_DIR/10-profile.conf" "$DESTDIR$SYSUSERS" \
        "$DESTDIR$TMPFILES"
    rmdir "$DESTDIR$DROPIN_DIR" 2>/dev/null || true
    if [ "$PURGE" = 1 ]; then
        say "purging $CONF_DIR, $STATE_DIR, $LOG_DIR and the user $USER_NAME"
        rm -rf "$DESTDIR$CONF_DIR" "$DESTDIR$STATE_DIR" "$DESTDIR$LOG_DIR"
        if [ -n "$(lookup_id passwd)" ] && command -v userdel >/dev/null; then
            userdel ${DESTDIR:+--root "$DESTDIR"} "$USER_NAME" >/dev/null 2>&1 || true
        fi
    else
        say "kept $CONF_DIR and $STATE_DIR (PURGE=1 removes them)"
    fi
    if systemd_running; then systemctl daemon-reload; fi
}

case "${1:-}" in
install) do_install ;;
uninstall) do_uninstall ;;
*) die "usage: $0 install|uninstall" ;;
esac
