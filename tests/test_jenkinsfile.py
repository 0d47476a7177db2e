"""The Jenkinsfile: six stages in pipeline order, each a thin call of `scripts.pipeline --stage NAME`.

Also the gates, the credential scoping, the parameters the watchdog sends, and an offline lint
with npm-groovy-lint (CodeNarc), the closest to Jenkins' own validator that runs without a Jenkins.
"""

import fnmatch
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


def block_span(text: str, start: int) -> tuple[int, int]:
    """(start, end) of the body of the first `{ ... }` at or after `start`, braces in strings and comments
    ignored; the closing brace is at `end`."""
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
                return begin, i
        i += 1
    raise AssertionError("unbalanced braces")


def block(text: str, start: int) -> str:
    """The body of the first `{ ... }` at or after `start`, braces in strings and comments ignored."""
    begin, end = block_span(text, start)
    return text[begin:end]


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


# The environment Jenkins gives a build, by job kind: the Git plugin sets GIT_BRANCH (the remote-tracking
# name in a Pipeline-from-SCM job, the README's kind); BRANCH_NAME, which `when { branch }` reads, exists
# only in multibranch jobs.
def plain_pipeline_job_env(branch: str) -> dict[str, str]:
    return {"JOB_NAME": "vqa-retrain", "BUILD_NUMBER": "7", "GIT_BRANCH": f"origin/{branch}"}


def multibranch_job_env(branch: str) -> dict[str, str]:
    return {"JOB_NAME": f"vqa-retrain/{branch}", "BUILD_NUMBER": "7", "GIT_BRANCH": branch, "BRANCH_NAME": branch}


def when_matches(conditions: str, env: dict[str, str]) -> bool:
    """Evaluate the body of a `when {}` as Declarative does (all conditions must hold), for the conditions
    `branch`, `environment`, `anyOf`, `allOf` and `not`; any other condition fails the test."""
    results, i = [], 0
    while i < len(conditions):
        j = _end_of_literal(conditions, i)
        if j != i or conditions[i].isspace():
            i = max(j, i + 1)
            continue
        rest = conditions[i:]
        if nested := re.match(r"(anyOf|allOf|not)\s*\{", rest):
            begin, end = block_span(conditions, i)
            inner = conditions[begin:end]
            parts = [p for p in _top_level_conditions(inner)]
            values = [when_matches(p, env) for p in parts]
            results.append({"anyOf": any(values), "allOf": all(values), "not": not all(values)}[nested.group(1)])
            i = end + 1
        elif branch := re.match(r"branch\s+'([^']*)'", rest):
            results.append(fnmatch.fnmatchcase(env.get("BRANCH_NAME") or "\0", branch.group(1)))
            i += branch.end()
        elif var := re.match(r"environment\s+name:\s*'([^']*)',\s*value:\s*'([^']*)'", rest):
            results.append(env.get(var.group(1)) == var.group(2))
            i += var.end()
        else:
            raise AssertionError(f"unsupported when condition: {rest[:60]!r}")
    return all(results)


def _top_level_conditions(text: str) -> list[str]:
    """Split a block's body into its conditions, one per line (nested blocks kept whole)."""
    parts, i, start = [], 0, 0
    while i < len(text):
        j = _end_of_literal(text, i)
        if j != i:
            i = j
            continue
        if text[i] == "{":
            i = block_span(text, i)[1] + 1
            continue
        if text[i] == "\n":
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return [p for p in parts if re.sub(r"//.*", "", p).strip()]


def runs(body: str, env: dict[str, str]) -> bool:
    """Whether a stage runs in a build with this environment."""
    found = re.search(r"^\s*when\s*\{", body, re.M)
    return found is None or when_matches(block(body, found.start()), env)


def test_push_and_deploy_run_for_main_in_the_plain_pipeline_job_the_readme_sets_up():
    """In a Pipeline-from-SCM job (no BRANCH_NAME) all six stages run for main; push and deploy only there."""
    assert not when_matches("branch 'main'", plain_pipeline_job_env("main")), "the old gate never ran here"
    assert [title for title, body in stages() if runs(body, plain_pipeline_job_env("main"))] == [
        title for _, title in pipeline_stages()]
    assert [title for title, body in stages() if not runs(body, plain_pipeline_job_env("feature/x"))] == [
        "Push to registry", "Deploy to Kubernetes"]
    walkthrough = (REPO_ROOT / "docs" / "minikube.md").read_text()  # where the README sends Jenkins users
    assert "New Item, *Pipeline* named `vqa-retrain`" in walkthrough, "the documented job kind changed"


def test_push_and_deploy_also_run_for_main_in_a_multibranch_job():
    """In a multibranch job (BRANCH_NAME set) the same gate lets main through and holds other branches back."""
    assert all(runs(body, multibranch_job_env("main")) for _, body in stages())
    assert [title for title, body in stages() if not runs(body, multibranch_job_env("dev"))] == [
        "Push to registry", "Deploy to Kubernetes"]


def test_when_evaluator_rejects_conditions_it_does_not_know():
    """A gate written with a condition the evaluator cannot judge fails loudly instead of passing."""
    with pytest.raises(AssertionError, match="unsupported when condition"):
        when_matches("expression { return true }", plain_pipeline_job_env("main"))
    assert when_matches("anyOf {\n environment name: 'A', value: 'x'\n branch 'm*'\n}", {"BRANCH_NAME": "main"})
    assert not when_matches("not {\n branch 'main'\n}", {"BRANCH_NAME": "main"})


def test_a_push_to_the_repository_starts_a_build_through_the_documented_webhook():
    """`triggers { githubPush() }` answers the README's webhook to <jenkins>/github-webhook/."""
    assert "githubPush()" in section(section(TEXT, "pipeline"), "triggers")
    assert "/github-webhook/" in (REPO_ROOT / "docs" / "minikube.md").read_text()


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
