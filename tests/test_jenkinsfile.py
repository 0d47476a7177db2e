"""The Jenkinsfile: six stages in pipeline order, each a thin call of `scripts.pipeline --stage NAME`.

Also the gates, the credential scoping, the parameters the watchdog sends, and an offline lint
with npm-groovy-lint (CodeNarc), the closest to Jenkins' own validator that runs without a Jenkins.
"""

import json
import re
import shutil
import subprocess

import pytest

from app.config import REPO_ROOT
from tests.jenkins_server import jenkinsfile_parameters
from watchdog.triggers import JENKINS_PARAMETERS

JENKINSFILE = REPO_ROOT / "Jenkinsfile"
TEXT = JENKINSFILE.read_text(encoding="utf-8")
GROOVY_LINT = REPO_ROOT / ".cache" / "npm-groovy-lint" / "node_modules" / ".bin" / "npm-groovy-lint"


def _end_of_literal(text: str, i: int) -> int:
    """Index just after the string literal or comment starting at `i` (or `i` if there is none)."""
    for opener, closer in (("'''", "'''"), ('"""', '"""'), ("//", "\n"), ("/*", "*/"), ("'", "'"), ('"', '"')):
        if text.startswith(opener, i):
            j = i + len(opener)
            while not text.startswith(closer, j):
                j += 2 if text[j] == "\\" and opener not in ("//", "/*") else 1
            return j + len(closer)
    return i


def block(text: str, start: int) -> str:
    """The body of the first `{ ... }` at or after `start`, braces in strings and comments ignored."""
    i, depth, begin = start, 0, None
    while i < len(text):
        j = _end_of_literal(text, i)
        if j != i:
            i = j
            continue
        if text[i] == "{":
            depth += 1
            begin = i + 1 if begin is None else begin
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[begin:i]
        i += 1
    raise AssertionError("unbalanced braces")


def section(text: str, name: str) -> str:
    match = re.search(rf"^\s*{name}\s*\{{", text, re.M)
    assert match, f"no {name} {{}} block"
    return block(text, match.start())


def stages() -> list[tuple[str, str]]:
    body = section(section(TEXT, "pipeline"), "stages")
    return [(m.group(1), block(body, m.end())) for m in re.finditer(r"stage\s*\(\s*'([^']+)'\s*\)", body)]


def pipeline_stages() -> tuple[tuple[str, str], ...]:
    """(name, title) of the pipeline stages, from the module `scripts/pipeline.py` runs."""
    from app.learning.pipeline import STAGES

    return STAGES


def test_the_command_line_offers_exactly_the_pipeline_stages(run_script):
    """`python -m scripts.pipeline --help` lists the six stage names, in pipeline order, as --stage choices."""
    done = run_script("pipeline", "--help")
    assert done.returncode == 0, done.stderr
    names = [name for name, _ in pipeline_stages()]
    assert "{" + ",".join(names) + "}" in done.stdout.replace("\n", "").replace(" ", "")


def test_six_stages_in_pipeline_order_with_the_pipeline_titles():
    """The Jenkinsfile's stage titles are scripts.pipeline's six stage titles, in the same order."""
    assert [title for title, _ in stages()] == [title for _, title in pipeline_stages()]
    assert [title for title, _ in stages()] == [
        "Checkout", "CI: LoRA training", "Build images", "CI: model evaluation", "Push to registry",
        "Deploy to Kubernetes",
    ]


def test_each_stage_calls_the_pipeline_entry_point_with_its_own_stage_name():
    """Each stage runs `.venv/bin/python -m scripts.pipeline --stage <its name>` exactly once, and no other."""
    names = dict((title, name) for name, title in pipeline_stages())
    for title, body in stages():
        calls = re.findall(r"sh\s+'\.venv/bin/python -m scripts\.pipeline --stage ([\w-]+)[^']*'", body)
        assert calls == [names[title]], f"stage {title!r} calls {calls}"


def test_push_and_deploy_only_on_main_and_nothing_else_gated():
    """Push and deploy carry `when { branch 'main' }`; the first four stages run on every branch."""
    gated = {title for title, body in stages() if re.search(r"when\s*\{\s*branch\s+'main'\s*\}", body)}
    assert gated == {"Push to registry", "Deploy to Kubernetes"}


def test_credentials_are_scoped_to_the_stages_that_need_them():
    """Registry credentials only in push, the kubeconfig file only in deploy, no credentials elsewhere."""
    by_title = dict(stages())
    assert "usernamePassword(credentialsId: 'registry-credentials'" in by_title["Push to registry"]
    assert "file(credentialsId: 'kubeconfig', variable: 'KUBECONFIG')" in by_title["Deploy to Kubernetes"]
    push_creds = block(by_title["Push to registry"], by_title["Push to registry"].index("withCredentials"))
    assert "--stage push" in push_creds
    deploy_creds = block(by_title["Deploy to Kubernetes"], by_title["Deploy to Kubernetes"].index("withCredentials"))
    assert "--stage deploy" in deploy_creds
    outside = TEXT.replace(by_title["Push to registry"], "").replace(by_title["Deploy to Kubernetes"], "")
    assert "withCredentials" not in outside and "credentialsId" not in outside


def test_parameters_are_exactly_what_the_watchdog_sends():
    """The `parameters {}` block declares the four string parameters JenkinsTrigger sends, in order."""
    assert tuple(jenkinsfile_parameters(JENKINSFILE)) == JENKINS_PARAMETERS


def test_options_and_post_actions():
    """Timestamps, no concurrent builds, a timeout; on failure a message; always archive the run's reports."""
    options = section(TEXT, "options")
    assert "timestamps()" in options and "disableConcurrentBuilds()" in options
    assert re.search(r"timeout\(time: \d+, unit: '(HOURS|MINUTES)'\)", options)
    post = section(TEXT, "post")
    assert "echo" in section(post, "failure")
    always = section(post, "always")
    assert 'archiveArtifacts artifacts: "data/pipeline/${env.BUILD_NUMBER}/*.json"' in always


def test_archived_run_folder_is_where_the_pipeline_writes_its_reports(tmp_path):
    """scripts.pipeline names the run folder after BUILD_NUMBER and writes summary.json there."""
    from app.config import Settings
    from app.learning.pipeline import Run

    run = Run.open(Settings(data_dir=str(tmp_path), build_number="17"), None)
    assert run.run_dir == tmp_path / "pipeline" / "17" and run.tag == "17"


@pytest.mark.slow
def test_jenkinsfile_passes_groovy_lint():
    """npm-groovy-lint parses the Jenkinsfile (Groovy syntax) and finds no error or warning."""
    tool = shutil.which("npm-groovy-lint") or (str(GROOVY_LINT) if GROOVY_LINT.exists() else None)
    if tool is None:
        pytest.fail("npm-groovy-lint is not installed: run `bash .ci/install_groovy_lint.sh`")
    proc = subprocess.run([tool, "--noserver", "--output", "json", "--failon", "warning", JENKINSFILE.name],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    findings = [e for f in report["files"].values() for e in f["errors"] if e["severity"] in ("error", "warning")]
    assert findings == [] and proc.returncode == 0, (findings, proc.stderr[-2000:])
    assert report["summary"]["totalFilesLinted"] == 1


def test_block_parser_ignores_braces_in_strings_and_comments():
    """The brace matcher used above skips braces inside quotes and comments."""
    text = "a { x = '}' // }\n /* { */ y = \"{\" }"
    assert block(text, 0).strip().endswith('y = "{"')
