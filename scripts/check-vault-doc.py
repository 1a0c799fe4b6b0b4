#!/usr/bin/env python3
"""docs/vault-setup.md quotes deploy/vault/setup.sh: every step of the script (between
`# --- step: NAME` and `# --- end`) appears in the doc, once, as the ```sh block that follows
`<!-- setup.sh step: NAME -->`, character for character; and the doc names every policy file of
deploy/vault/. The platform runs the script itself, so the test suite exercises what the doc says.
Prints one line per check; exits 1 on any difference."""
import difflib
import pathlib
import re
import sys

repo = pathlib.Path(__file__).resolve().parent.parent
script = (repo / "deploy/vault/setup.sh").read_text()
doc = (repo / "docs/vault-setup.md").read_text()

steps = re.findall(r"^# --- step: (\S+)\n(.*?)^# --- end\n", script, re.S | re.M)
blocks = re.findall(r"^<!-- setup\.sh step: (\S+) -->\n```sh\n(.*?)^```\n", doc, re.S | re.M)
failed = 0


def check(ok, what, detail=""):
    global failed
    print(("PASS  " if ok else "FAIL  ") + what)
    if not ok:
        failed += 1
        if detail:
            print(detail)


check(len(steps) >= 6, f"setup.sh has its steps ({len(steps)})")
doc_steps = {}
for name, body in blocks:
    doc_steps.setdefault(name, []).append(body)
for name, body in steps:
    got = doc_steps.pop(name, [])
    if len(got) != 1:
        check(False, f"step {name}: quoted {len(got)} times in docs/vault-setup.md (want once)")
        continue
    diff = "".join(difflib.unified_diff(body.splitlines(True), got[0].splitlines(True), "setup.sh", "vault-setup.md"))
    check(not diff, f"step {name}: the doc's block is the script's", diff)
for name in doc_steps:
    check(False, f"docs/vault-setup.md quotes a step {name} the script does not have")
for hcl in sorted((repo / "deploy/vault").glob("*.hcl")):
    check(f"deploy/vault/{hcl.name}" in doc, f"doc links deploy/vault/{hcl.name}")
print(f"vault doc: {'OK' if not failed else f'{failed} failed'}")
sys.exit(1 if failed else 0)
