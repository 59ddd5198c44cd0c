# Sourced by scripts/setup and scripts/test: which Debian packages the build and the tests still
# need on this machine. Each probe tries what the code does (a link, not just `command -v`), so a
# compiler without its C runtime files (crti.o) counts as missing.

# link_ok CC [FLAGS...]: CC links a trivial shared library (what export_library does).
link_ok() {
  local dir rc
  dir=$(mktemp -d)
  printf 'int tvmflow_probe(void) { return 0; }\n' >"$dir/t.c"
  "$@" -shared -fPIC -o "$dir/t.so" "$dir/t.c" >/dev/null 2>&1 && rc=0 || rc=1
  rm -rf "$dir"
  return $rc
}

# The Python that creates .venv: $PYTHON, else python3.11, else python3.
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

# missing_packages: print the apt packages still needed, one per line, with the reason.
missing_packages() {
  local cc found=""
  # `python3 -m venv` needs ensurepip, which Debian ships apart from python3.
  [ -x .venv/bin/python ] || "$PY" -c 'import ensurepip' 2>/dev/null ||
    echo "$(basename "$PY")-venv (python -m venv)"
  # Host linker for x86 artifacts: TVM's export_library uses the first of these on PATH.
  for cc in g++ gcc clang++ clang c++ cc; do
    command -v "$cc" >/dev/null && link_ok "$cc" && { found=$cc; break; }
  done
  [ -n "$found" ] || echo "g++ (links x86 model.so)"
  # arm-* presets: the cross linker and the aarch64 C runtime files it links against.
  if ! command -v aarch64-linux-gnu-gcc >/dev/null; then
    echo "gcc-aarch64-linux-gnu (links aarch64 model.so)"
    echo "libc6-dev-arm64-cross (crti.o, libc.so for aarch64 links)"
  elif ! link_ok aarch64-linux-gnu-gcc; then
    echo "libc6-dev-arm64-cross (crti.o, libc.so for aarch64 links)"
  fi
  # Running aarch64 artifacts here (arm tests, `tvmflow run --emulate`).
  command -v qemu-aarch64-static >/dev/null || echo "qemu-user-static (runs aarch64 artifacts)"
  # scripts/arm-sysroot fetches the arm64 userland with apt-get and unpacks it with dpkg-deb.
  [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] ||
    echo "debian-archive-keyring (verifies the arm64 packages of scripts/arm-sysroot)"
}
