# pfslab: two commands on a fresh Debian 12 machine
#   sudo make lab    build the lab, run a PFS and a traditional upgrade, write pcaps/<run-id>/
#   sudo make test   the whole test suite (lab tests need root)
# Each target installs whatever is missing first: Debian packages, the venv, pip packages.

SHELL      := /bin/bash
# Debian's mininet lives in /usr/bin/python3's dist-packages: the venv must be built on that
# interpreter, with system site-packages, or `import mininet` fails.
SYSPY      := /usr/bin/python3
VENV       := .venv
PY         := $(VENV)/bin/python
# ping, ip, tcpdump, tftp and nc: what a user types inside a lab host (`pingall` needs ping)
APT_PKGS   := mininet bridge-utils iproute2 iptables tcpdump tshark tftpd-hpa tftp-hpa \
              iputils-ping netcat-openbsd \
              libnetfilter-queue-dev python3-venv python3-dev gcc ethtool procps \
              python3-cryptography chromium rsyslog
STAMP      := $(VENV)/.pfslab-installed
LAB_ARGS   ?=
PYTEST_ARGS ?=
FUZZ_ARGS  ?= --cases 100000
FAULTS_ARGS ?=
BENCH_DECODE_DIR ?= pcaps/samples/pfs

.PHONY: all deps apt venv test test-fast lab bench bench-scale bench-sim bench-sim-speed bench-calibrate bench-decode faults fuzz wireshark-plugin samples clean-venv help

help:
	@echo "sudo make lab      run the default lab (PFS vs traditional), captures in pcaps/"
	@echo "sudo make test     run all tests (installs what is missing)"
	@echo "make test-fast     the tests that need no root"
	@echo "sudo make bench    WAN check and phones-per-subnet sweep, JSON + PNG in bench/out/"
	@echo "sudo make faults   the fault matrix (2 x 8 phones), one row per fault, pcaps/faults/"
	@echo "make fuzz          10^5 hostile cases against each of the four decoders (FUZZ_ARGS)"
	@echo "sudo make bench-scale   PFS at 100..1000 phones: fidelity, roots, WAN, memory; bench/scale/"
	@echo "make bench-sim     simulated curve, 1..1000 phones/subnet at full size: bench/sim/"
	@echo "make bench-sim-speed   pfslab sim at 10^4 and 10^5 phones: wall, CPU, memory; bench/speed/"
	@echo "sudo make bench-calibrate   the sim against the lab at 2 x 8, 2 x 100, 4 x 250: bench/calibrate/"
	@echo "make bench-decode  decode time and peak RSS per MB of capture (BENCH_DECODE_DIR=a run)"
	@echo "make wireshark-plugin   install the Lua dissector for Wireshark"
	@echo "sudo make samples  regenerate pcaps/samples/ (reference captures + golden decodes)"

deps: apt venv

# Installs only the packages that are missing, so a second run is quick.
apt:
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "pfslab: missing Debian packages: $$missing" >&2; \
	    echo "pfslab: run as root (sudo make ...) so they can be installed" >&2; exit 2; fi; \
	  echo "pfslab: installing Debian packages: $$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml | apt
	@test -x $(PY) || $(SYSPY) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

test: deps
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: deps
	$(VENV)/bin/pytest -m "not lab" $(PYTEST_ARGS)

lab: deps
	$(VENV)/bin/pfslab lab $(LAB_ARGS)

bench: deps
	$(PY) -m pfslab.bench --out bench/out

# One lab run per fault (docs/faults.md); exit 1 if a phone hangs or installs tampered bytes.
faults: deps
	$(PY) -m pfslab.lab.matrix --out pcaps/faults $(FAULTS_ARGS)

# Counts per decoder (codec, Scapy, Lua under tshark, pfslab decode); exit 1 on any crash.
fuzz: deps
	$(PY) -m pfslab.dissect.fuzz $(FUZZ_ARGS)
# BENCH_SCALE_ARGS='--sizes 100,250' runs a subset
BENCH_SCALE_ARGS ?=
bench-scale: deps
	$(PY) -m pfslab.bench_scale --out bench/scale $(BENCH_SCALE_ARGS)
bench-sim: venv
	$(PY) -m pfslab.sim.bench --out bench/sim $(BENCH_SIM_ARGS)
bench-sim-speed: venv
	$(PY) -m pfslab.sim.speed --out bench/speed $(BENCH_SIM_SPEED_ARGS)
# BENCH_CALIBRATE_ARGS='--sites 2x8' runs a subset; '--sim-only' re-runs the sim side only
BENCH_CALIBRATE_ARGS ?=
bench-calibrate: deps
	$(PY) -m pfslab.calibrate --out bench/calibrate $(BENCH_CALIBRATE_ARGS)
# pfslab decode on a run's mode folder and on its first half: time, peak RSS per MB (docs/decode.md)
bench-decode: venv
	$(PY) -m pfslab.dissect.bench $(BENCH_DECODE_DIR) --report $(BENCH_DECODE_ARGS)

# Wireshark's personal Lua plugin folder is ~/.local/lib/wireshark/plugins/ (not under
# XDG_CONFIG_HOME). Under sudo it goes to the invoking user's home, owned by that user.
wireshark-plugin:
	@user="$$(id -un)"; home="$$HOME"; own=""; \
	if [ "$$(id -u)" = 0 ] && [ -n "$${SUDO_USER:-}" ] && [ "$$SUDO_USER" != root ]; then \
	  user="$$SUDO_USER"; home="$$(getent passwd "$$user" | cut -d: -f6)"; \
	  own="-o $$user -g $$(id -gn "$$user")"; fi; \
	if [ -z "$$home" ]; then echo "pfslab: no home directory for $$user" >&2; exit 2; fi; \
	dir="$$home/.local/lib/wireshark/plugins"; \
	for d in "$$home/.local" "$$home/.local/lib" "$$home/.local/lib/wireshark" "$$dir"; do \
	  [ -d "$$d" ] || install -d -m 755 $$own "$$d" || exit 1; done; \
	install -m 644 $$own pfslab/dissect/cppdp.lua "$$dir/cppdp.lua" && \
	echo "installed $$dir/cppdp.lua for $$user (restart Wireshark or Analyze > Reload Lua Plugins; see docs/wireshark.md)"

samples: deps
	$(PY) -m pfslab.dissect.samples --out pcaps/samples

clean-venv:
	rm -rf $(VENV) *.egg-info
