"""Deploy a synthesized CDK cloud assembly into ministack (a local AWS emulator that runs
Lambda code in local subprocesses) and tear it down again.

ministack pins botocore, so it lives in its own virtual environment (``.venv-ministack``,
created on first use). The server binds 127.0.0.1 on a free ephemeral port.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

REPO_ROOT = Path(__file__).resolve().parents[3]
MINISTACK_VERSION = "1.5.33"
# Without cryptography ministack's Cognito signs tokens with a dummy key and its HTTP API
# JWT authorizer (rightly) rejects them.
MINISTACK_REQUIREMENTS = (f"ministack=={MINISTACK_VERSION}", "cryptography>=44,<50")
VENV = REPO_ROOT / ".venv-ministack"
ACCOUNT = "000000000000"
REGION = "us-east-1"
ROOT_KEY = "test"
ROOT_SECRET = "test"
BOOTSTRAP_QUALIFIER = "hnb659fds"  # the CDK default synthesizer's


class MinistackError(RuntimeError):
    pass


def ensure_venv() -> Path:
    """The ministack interpreter, installing the pinned version on first use."""
    python = VENV / "bin" / "python"
    stamp = VENV / f".installed-{MINISTACK_VERSION}-crypto"
    if stamp.exists():
        return python
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *MINISTACK_REQUIREMENTS],
        check=True,
    )
    stamp.touch()
    return python


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Ministack:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def execute_api_base_url(self) -> str:
        return f"{self.endpoint}/_aws/execute-api"

    def client(self, service: str) -> Any:
        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ROOT_KEY,
            aws_secret_access_key=ROOT_SECRET,
        )

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextmanager
def running_ministack(
    workdir: Path, *, enforce_iam: bool = True, startup_timeout_s: float = 60
) -> Iterator[Ministack]:
    """Start ministack; with ``enforce_iam`` (its AUTH=true) every call is signed and
    evaluated against IAM: the Lambda functions run with their execution role's
    session, so a missing grant fails the call exactly as in AWS."""
    python = ensure_venv()
    port = free_port()
    log_path = workdir / "ministack.log"
    env = {
        **os.environ,
        "GATEWAY_PORT": str(port),
        "BIND_HOST": "127.0.0.1",
        "MINISTACK_HOST": "localhost",
        "MINISTACK_REGION": REGION,
        "TMPDIR": str(workdir),
        "STATE_DIR": str(workdir / "state"),
        "S3_DATA_DIR": str(workdir / "s3"),
        "LOG_LEVEL": "INFO",
        "AUTH": "true" if enforce_iam else "false",
        # The emulator's root credentials (what ``client()`` signs with). The Lambda
        # workers get their role's session credentials and ministack's endpoint
        # (AWS_ENDPOINT_URL), never a real AWS endpoint.
        "AWS_ACCESS_KEY_ID": ROOT_KEY,
        "AWS_SECRET_ACCESS_KEY": ROOT_SECRET,
    }
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        env.pop(name, None)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(python), "-m", "ministack"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,
        )
    stack = Ministack(port=port, process=process, log_path=log_path)
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if process.poll() is not None:
                raise MinistackError(f"ministack exited at startup:\n{stack.log_tail()}")
            try:
                with urllib.request.urlopen(
                    f"{stack.endpoint}/_ministack/health", timeout=2
                ) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise MinistackError(f"ministack did not start:\n{stack.log_tail()}")
            time.sleep(0.3)
        yield stack
    finally:
        # The server and the Lambda workers it spawned share the session it was
        # started in (start_new_session): end that process group, which is ours.
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait(timeout=5)
        _signal_group(process, signal.SIGKILL)  # workers that outlived the server


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _zip_dir(source: Path, target: Path) -> None:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(source).as_posix())


def _substitute(text: str) -> str:
    return (
        text.replace("${AWS::AccountId}", ACCOUNT)
        .replace("${AWS::Region}", REGION)
        .replace("${AWS::Partition}", "aws")
    )


def publish_assets(stack: Ministack, assembly: Path, stack_name: str, workdir: Path) -> None:
    """Do what ``cdk bootstrap`` + ``cdk-assets`` would: the bootstrap version parameter,
    the assets bucket, and each file asset zipped and uploaded."""
    ssm = stack.client("ssm")
    ssm.put_parameter(
        Name=f"/cdk-bootstrap/{BOOTSTRAP_QUALIFIER}/version",
        Value="30",
        Type="String",
        Overwrite=True,
    )
    s3 = stack.client("s3")
    manifest = json.loads((assembly / f"{stack_name}.assets.json").read_text())
    buckets: set[str] = set()
    for asset in manifest.get("files", {}).values():
        source = assembly / asset["source"]["path"]
        for destination in asset["destinations"].values():
            bucket = _substitute(destination["bucketName"])
            if bucket not in buckets:
                s3.create_bucket(Bucket=bucket)
                buckets.add(bucket)
            if asset["source"].get("packaging") == "zip":
                archive = workdir / f"{source.name}.zip"
                if not archive.exists():
                    _zip_dir(source, archive)
                body = archive
            else:
                body = source
            s3.upload_file(str(body), bucket, _substitute(destination["objectKey"]))


def deploy(
    stack: Ministack, template_body: dict[str, Any], stack_name: str, timeout_s: float = 240
) -> dict[str, str]:
    """Create the stack from a synthesized template; returns its outputs."""
    cfn = stack.client("cloudformation")
    template = json.dumps(template_body)
    s3 = stack.client("s3")
    s3.create_bucket(Bucket="seg-templates")
    s3.put_object(Bucket="seg-templates", Key=f"{stack_name}.json", Body=template.encode())
    cfn.create_stack(
        StackName=stack_name,
        TemplateURL=f"{stack.endpoint}/seg-templates/{stack_name}.json",
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
    )
    deadline = time.monotonic() + timeout_s
    while True:
        described = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
        status = described["StackStatus"]
        if status == "CREATE_COMPLETE":
            return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
        if (
            status.endswith("FAILED")
            or status.startswith("ROLLBACK")
            or time.monotonic() > deadline
        ):
            events = cfn.describe_stack_events(StackName=stack_name)["StackEvents"]
            failures = [
                f"{e['LogicalResourceId']} {e['ResourceType']} {e['ResourceStatus']}: "
                f"{e.get('ResourceStatusReason', '')}"
                for e in events
                if "FAILED" in e["ResourceStatus"]
            ]
            raise MinistackError(f"stack {status}:\n" + "\n".join(failures[:30]))
        time.sleep(1)


def copy_logs(stack: Ministack, target: Path) -> None:
    shutil.copy(stack.log_path, target)
