"""Batch inference jobs on the stand-in through a real boto3 ``bedrock`` client: every status and
transition on a fake clock, the output files and manifest, vectors equal to InvokeModel's,
stopping, listing, idempotency, misbehaviour and the endpoint's wiring."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import boto3
import pytest

from emulator.__main__ import build_parser, settings_from_args
from emulator.app import Emulator, EmulatorSettings
from emulator.misbehaviour import BatchJobBehaviour, Misbehaviour
from tasks.demo import sample_media
from tests.emulator import test_batch_inference_helpers as helpers
from tests.emulator.nova_job_helpers import FakeClock
from tests.emulator.test_batch_inference_helpers import (
    MODEL_ID,
    PHASE,
    RUN,
    STEPS,
    World,
    at,
    jsonl,
    lines_of,
    refused,
    text_input,
    text_records,
)

batch_clock = helpers.batch_clock
batch_stand_in = helpers.batch_stand_in
world = helpers.world


def test_a_job_passes_every_status_and_writes_one_out_file_per_input_file(world: World) -> None:
    records = text_records(150)
    world.put("input/part-a.jsonl", jsonl(records[:90]))
    world.put("input/more/part-b.jsonl", jsonl(records[90:]))
    world.put("input/notes.txt", b"not an input file: only .jsonl files are read")
    submitted = world.clock.now
    arn = world.create(jobName="whole-run", timeoutDurationInHours=48)
    job_id = arn.rsplit("/", 1)[1]
    assert re.fullmatch(r"arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/\w{12}", arn)

    job = world.job(arn)
    assert job["status"] == "Submitted"
    assert job["submitTime"] == job["lastModifiedTime"] == at(submitted)
    assert job["jobExpirationTime"] == at(submitted + 48 * 3600)
    assert (job["totalRecordCount"], job["processedRecordCount"]) == (0, 0)
    assert "endTime" not in job
    assert world.status_after(arn, PHASE - 0.001) == "Submitted"
    seen = [world.status_after(arn, 0.001)]
    seen += [world.status_after(arn, PHASE) for _ in range(2)]
    assert seen == ["Validating", "Scheduled", "InProgress"]
    job = world.job(arn)
    assert job["lastModifiedTime"] == at(submitted + 3 * PHASE)
    assert job["totalRecordCount"] == 150
    assert world.keys("results/") == []
    assert world.status_after(arn, RUN) == "Completed"

    job = world.job(arn)
    assert job["endTime"] == job["lastModifiedTime"] == at(submitted + 3 * PHASE + RUN)
    counts = [job[f"{kind}RecordCount"] for kind in ("total", "processed", "success", "error")]
    assert counts == [150, 150, 150, 0]
    assert "message" not in job
    folder = world.folder(arn)
    assert world.keys(folder) == [
        f"{folder}manifest.json.out",
        f"{folder}more/part-b.jsonl.out",
        f"{folder}part-a.jsonl.out",
    ]
    manifest = json.loads(world.read(f"s3://{world.bucket}/{folder}manifest.json.out"))
    assert manifest["totalRecordCount"] == manifest["successRecordCount"] == 150
    assert manifest["processedRecordCount"] == 150
    assert manifest["errorRecordCount"] == manifest["outputTokenCount"] == 0
    assert manifest["inputTokenCount"] > 150
    lines = lines_of(world.read(f"s3://{world.bucket}/{folder}part-a.jsonl.out"))
    assert [line["recordId"] for line in lines] == [r["recordId"] for r in records[:90]]
    for line, record in zip(lines, records, strict=False):
        assert list(line) == ["recordId", "modelInput", "modelOutput"]
        assert line["modelInput"] == record["modelInput"]
        [embedding] = line["modelOutput"]["embeddings"]
        assert embedding["embeddingType"] == "TEXT"
        assert len(embedding["embedding"]) == 256
    assert job_id in folder


def test_a_record_vector_equals_what_invoke_model_returns_for_the_same_body(
    world: World,
) -> None:
    note = world.put("input/media/note.txt", b"a note kept beside the batch input")
    image = world.put("input/media/tile.png", sample_media.sample_image(4, "png"))
    bodies = {
        "inline-text": text_input("rivers and stones under the light", dimension=1024),
        "text-from-s3": {
            "taskType": "SINGLE_EMBEDDING",
            "singleEmbeddingParams": {
                "embeddingPurpose": "GENERIC_RETRIEVAL",
                "embeddingDimension": 384,
                "text": {"truncationMode": "END", "source": {"s3Location": {"uri": note}}},
            },
        },
        "image-from-s3": {
            "taskType": "SINGLE_EMBEDDING",
            "singleEmbeddingParams": {
                "embeddingPurpose": "GENERIC_INDEX",
                "embeddingDimension": 256,
                "image": {"format": "png", "source": {"s3Location": {"uri": image}}},
            },
        },
    }
    records = [{"recordId": key, "modelInput": body} for key, body in bodies.items()]
    world.put("input/records.jsonl", jsonl(records + text_records(97)))
    arn = world.create()
    assert world.status_after(arn, 3 * PHASE + RUN) == "Completed"
    out = world.read(f"s3://{world.bucket}/{world.folder(arn)}records.jsonl.out")
    outputs = {line["recordId"]: line["modelOutput"] for line in lines_of(out)}
    for record_id, body in bodies.items():
        response = world.runtime.invoke_model(modelId=MODEL_ID, body=json.dumps(body))
        assert outputs[record_id] == json.loads(response["body"].read()), record_id


def test_records_the_model_refuses_get_its_error_and_the_job_still_completes(
    world: World,
) -> None:
    no_purpose = text_input("words")
    del no_purpose["singleEmbeddingParams"]["embeddingPurpose"]
    segmented = {**text_input("words"), "taskType": "SEGMENTED_EMBEDDING"}
    bad = [{"recordId": "no-purpose", "modelInput": no_purpose}]
    bad += [{"recordId": "segmented", "modelInput": segmented}]
    unnamed = {"modelInput": text_input("a record without an id")}
    world.put("input/mixed.jsonl", jsonl([*bad, unnamed, *text_records(98)]))
    arn = world.create()
    assert world.status_after(arn, 3 * PHASE + RUN) == "Completed"
    job = world.job(arn)
    counts = [job[f"{kind}RecordCount"] for kind in ("total", "processed", "success", "error")]
    assert counts == [101, 101, 99, 2]
    lines = lines_of(world.read(f"s3://{world.bucket}/{world.folder(arn)}mixed.jsonl.out"))
    errors = {line["recordId"]: line["error"] for line in lines if "error" in line}
    for record_id, record in zip(("no-purpose", "segmented"), bad, strict=True):
        response_error = refused(
            world.runtime.exceptions.ValidationException,
            lambda record=record: world.runtime.invoke_model(
                modelId=MODEL_ID, body=json.dumps(record["modelInput"])
            ),
        )
        assert errors[record_id] == {"errorCode": 400, "errorMessage": response_error}
    assert re.fullmatch(r"[A-Z0-9]{11}", lines[2]["recordId"])
    assert "modelOutput" in lines[2]


def test_a_failing_job_ends_failed_with_a_message_and_writes_nothing(world: World) -> None:
    world.stand_in.configure(batch_jobs=BatchJobBehaviour(**{**STEPS.to_json(), "failure_rate": 1}))
    world.put("input/records.jsonl", jsonl(text_records(100)))
    arn = world.create()
    assert world.status_after(arn, 3 * PHASE) == "InProgress"
    assert world.status_after(arn, RUN) == "Failed"
    job = world.job(arn)
    assert job["message"] == "The batch inference job failed because of an internal error."
    assert job["endTime"] == job["lastModifiedTime"]
    assert world.keys("results/") == []


def test_a_partial_job_leaves_seeded_records_unprocessed_and_ends_partially_completed(
    world: World,
) -> None:
    partial = {**STEPS.to_json(), "partial_rate": 1.0, "record_failure_rate": 0.2, "seed": 7}
    world.stand_in.configure(batch_jobs=BatchJobBehaviour(**partial))
    world.put("input/records.jsonl", jsonl(text_records(100)))
    arn = world.create(clientRequestToken="partial-job-1")
    assert world.status_after(arn, 3 * PHASE + RUN) == "PartiallyCompleted"
    job = world.job(arn)
    lines = lines_of(world.read(f"s3://{world.bucket}/{world.folder(arn)}records.jsonl.out"))
    unreached = [line for line in lines if "error" in line]
    assert 0 < len(unreached) < 50
    assert job["message"] == (
        f"The job timed out before all records were processed: {len(unreached)} of 100 records "
        "were not processed."
    )
    for line in unreached:
        assert line["error"] == {
            "errorCode": 408,
            "errorMessage": "The job timed out before this record was processed.",
        }
    assert job["processedRecordCount"] == job["successRecordCount"] == 100 - len(unreached)
    assert job["errorRecordCount"] == len(unreached)


def test_a_run_longer_than_the_timeout_is_cut_off_partially_completed(world: World) -> None:
    slow = {**STEPS.to_json(), "job_seconds": 0.0, "seconds_per_record": 1728.0}  # 48 h for 100
    world.stand_in.configure(batch_jobs=BatchJobBehaviour(**slow))
    world.put("input/records.jsonl", jsonl(text_records(100)))
    submitted = world.clock.now
    arn = world.create(timeoutDurationInHours=24)
    assert world.status_after(arn, 3 * PHASE) == "InProgress"
    assert world.status_after(arn, 24 * 3600 - 3 * PHASE - 1) == "InProgress"
    assert world.status_after(arn, 1) == "PartiallyCompleted"
    job = world.job(arn)
    assert job["endTime"] == job["jobExpirationTime"] == at(submitted + 24 * 3600)
    # 24 h less 30 s of the 48 h run: the first 49 records were reached.
    assert (job["processedRecordCount"], job["errorRecordCount"]) == (49, 51)
    lines = lines_of(world.read(f"s3://{world.bucket}/{world.folder(arn)}records.jsonl.out"))
    assert all("modelOutput" in line for line in lines[:49])
    assert all(line["error"]["errorCode"] == 408 for line in lines[49:])


def test_a_job_still_queued_at_its_timeout_expires(world: World) -> None:
    queued = {**STEPS.to_json(), "queue_seconds": 30 * 3600.0}
    world.stand_in.configure(batch_jobs=BatchJobBehaviour(**queued))
    world.put("input/records.jsonl", jsonl(text_records(100)))
    submitted = world.clock.now
    arn = world.create()
    assert world.status_after(arn, 2 * PHASE) == "Scheduled"
    assert world.status_after(arn, 24 * 3600 - 2 * PHASE - 1) == "Scheduled"
    assert world.status_after(arn, 1) == "Expired"
    job = world.job(arn)
    assert job["timeoutDurationInHours"] == 24
    assert job["endTime"] == job["jobExpirationTime"] == at(submitted + 24 * 3600)
    assert job["message"] == "The job did not start within its timeout of 24 hours."
    assert world.keys("results/") == []


@pytest.mark.parametrize(
    ("seconds_before_stop", "status"),
    [(0.0, "Submitted"), (PHASE, "Validating"), (2 * PHASE, "Scheduled")],
)
def test_a_job_stopped_before_it_runs_is_stopped_with_no_output(
    world: World, seconds_before_stop: float, status: str
) -> None:
    world.put("input/records.jsonl", jsonl(text_records(100)))
    arn = world.create()
    assert world.status_after(arn, seconds_before_stop) == status
    stopped_at = world.clock.now
    assert (
        world.control.stop_model_invocation_job(jobIdentifier=arn)["ResponseMetadata"][
            "HTTPStatusCode"
        ]
        == 200
    )
    assert world.job(arn)["status"] == "Stopping"
    world.control.stop_model_invocation_job(jobIdentifier=arn)  # stopping again is no error
    assert world.status_after(arn, PHASE) == "Stopped"
    job = world.job(arn)
    assert job["endTime"] == at(stopped_at + PHASE)
    assert world.keys("results/") == []
    assert world.status_after(arn, RUN) == "Stopped"
    message = refused(
        world.control.exceptions.ConflictException,
        lambda: world.control.stop_model_invocation_job(jobIdentifier=arn),
    )
    assert message == f"The job {arn} is Stopped and cannot be stopped."


def test_a_job_stopped_mid_run_keeps_the_records_it_reached(world: World) -> None:
    world.put("input/records.jsonl", jsonl(text_records(100)))
    arn = world.create()
    assert world.status_after(arn, 3 * PHASE + RUN / 4) == "InProgress"
    world.control.stop_model_invocation_job(jobIdentifier=arn.rsplit("/", 1)[1])
    assert world.status_after(arn, PHASE) == "Stopped"
    job = world.job(arn)
    assert [job["processedRecordCount"], job["successRecordCount"]] == [25, 25]
    lines = lines_of(world.read(f"s3://{world.bucket}/{world.folder(arn)}records.jsonl.out"))
    assert [line["error"]["errorMessage"] for line in lines[25:]] == [
        "The job was stopped before this record was processed."
    ] * 75
    assert f"{world.folder(arn)}manifest.json.out" in world.keys(world.folder(arn))


def test_a_job_whose_output_bucket_is_gone_when_it_ends_fails(world: World) -> None:
    world.put("input/records.jsonl", jsonl(text_records(100)))
    output_bucket = f"{world.bucket}-out"
    world.s3.create_bucket(Bucket=output_bucket)
    target = {"s3OutputDataConfig": {"s3Uri": f"s3://{output_bucket}/results"}}
    arn = world.create(outputDataConfig=target)
    assert world.status_after(arn, 3 * PHASE) == "InProgress"
    world.s3.delete_bucket(Bucket=output_bucket)
    assert world.status_after(arn, RUN) == "Failed"
    assert world.job(arn)["message"] == (
        f"Unable to access the output location s3://{output_bucket}/results: the bucket "
        f"{output_bucket} does not exist or is not accessible."
    )


def test_ended_jobs_cannot_be_stopped_and_unknown_jobs_are_not_found(world: World) -> None:
    world.put("input/records.jsonl", jsonl(text_records(100)))
    arn = world.create()
    assert world.status_after(arn, 3 * PHASE + RUN) == "Completed"
    refused(
        world.control.exceptions.ConflictException,
        lambda: world.control.stop_model_invocation_job(jobIdentifier=arn),
    )
    unknown = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/zzzzzzzzzzzz"
    elsewhere = arn.replace("123456789012", "210987654321")
    for identifier in (unknown, "zzzzzzzzzzzz", elsewhere):
        for call in (
            world.control.get_model_invocation_job,
            world.control.stop_model_invocation_job,
        ):
            message = refused(
                world.control.exceptions.ResourceNotFoundException,
                lambda call=call, identifier=identifier: call(jobIdentifier=identifier),
                status=404,
            )
            assert message == f"Could not find the model invocation job {identifier}."


def test_the_client_request_token_makes_create_idempotent(world: World) -> None:
    world.put("input/records.jsonl", jsonl(text_records(100)))
    token = f"token-{world.bucket}"
    first = world.create(clientRequestToken=token, jobName="first")
    assert world.create(clientRequestToken=token, jobName="first") == first
    # "If this token matches a previous request, Amazon Bedrock ignores the request."
    assert world.create(clientRequestToken=token, jobName="other") == first
    assert world.job(first)["clientRequestToken"] == token
    assert world.job(first)["jobName"] == "first"
    assert world.create() != world.create()  # botocore fills in a fresh token for each call


def test_listing_filters_sorts_and_pages(world: World) -> None:
    world.put("input/records.jsonl", jsonl(text_records(100)))
    name = f"listed-{world.bucket[-8:]}"
    arns = []
    for _ in range(3):
        arns.append(world.create(jobName=name))
        world.clock.advance(1)
    world.control.stop_model_invocation_job(jobIdentifier=arns[0])
    assert world.status_after(arns[0], PHASE) == "Stopped"

    def listed(**query: object) -> list[str]:
        response = world.control.list_model_invocation_jobs(nameContains=name, **query)
        return [summary["jobArn"] for summary in response["invocationJobSummaries"]]

    assert listed() == arns[::-1]
    assert listed(sortOrder="Ascending", sortBy="CreationTime") == arns
    assert listed(statusEquals="Stopped") == [arns[0]]
    assert listed(statusEquals="Validating") == arns[:0:-1]
    first_time = world.job(arns[0])["submitTime"]
    assert listed(submitTimeAfter=first_time) == arns[:0:-1]
    assert listed(submitTimeBefore=world.job(arns[2])["submitTime"]) == arns[1::-1]
    assert (
        world.control.list_model_invocation_jobs(nameContains="no-such-name")[
            "invocationJobSummaries"
        ]
        == []
    )
    paginator = world.control.get_paginator("list_model_invocation_jobs")
    pages = list(
        paginator.paginate(
            nameContains=name, sortOrder="Ascending", PaginationConfig={"PageSize": 2}
        )
    )
    assert [len(page["invocationJobSummaries"]) for page in pages] == [2, 1]
    summary = pages[0]["invocationJobSummaries"][0]
    assert summary == {
        key: value for key, value in world.job(arns[0]).items() if key != "ResponseMetadata"
    }


def test_throttled_status_calls_are_retried_then_raised(world: World) -> None:
    throttle = Misbehaviour(operations=frozenset({"GetModelInvocationJob"}), throttle_rate=1.0)
    world.stand_in.configure(bedrock_control_faults=(throttle,))
    world.stand_in.reset_stats()
    identifier = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcdefabcdef"
    # Two attempts: one retry shows botocore retries it, without a long back-off.
    control = world.stand_in.client(
        "bedrock", retries={"mode": "standard", "total_max_attempts": 2}
    )
    with pytest.raises(control.exceptions.ThrottlingException) as caught:
        control.get_model_invocation_job(jobIdentifier=identifier)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 1
    stats = world.stand_in.stats()["bedrock"]
    assert stats["errors"]["GetModelInvocationJob"] == {"ThrottlingException": 2}
    assert world.control.list_model_invocation_jobs(maxResults=1)["ResponseMetadata"]


def test_the_environment_points_a_plain_bedrock_client_at_the_stand_in(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = world.stand_in.environment()
    assert environment["AWS_ENDPOINT_URL_BEDROCK"] == world.stand_in.endpoints.bedrock
    assert (
        environment["AWS_ENDPOINT_URL_BEDROCK"] != environment["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"]
    )
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    plain = boto3.client("bedrock")
    assert "invocationJobSummaries" in plain.list_model_invocation_jobs(maxResults=1)


def test_command_line_options_for_the_control_plane_and_batch_jobs() -> None:
    args = build_parser().parse_args(
        ["--in-memory", "--seed", "4", "--batch-job-seconds", "9", "--batch-failure-rate", "0.5"]
    )
    settings = settings_from_args(args)
    assert settings.bedrock_control_port == 8703
    assert settings.batch_jobs == BatchJobBehaviour(seed=4, job_seconds=9.0, failure_rate=0.5)
    free = build_parser().parse_args(["--bedrock-port", "0", "--in-memory"])
    assert settings_from_args(free).bedrock_control_port == 0
    chosen = build_parser().parse_args(["--bedrock-port", "0", "--bedrock-control-port", "9"])
    assert settings_from_args(chosen).bedrock_control_port == 9


def test_jobs_survive_a_restart_with_a_state_directory(tmp_path: Path) -> None:
    clock = FakeClock()
    settings = EmulatorSettings(state_dir=tmp_path, batch_clock=clock, batch_jobs=STEPS)
    with Emulator(settings) as first:
        first.client("s3").create_bucket(Bucket="restart-bucket")
        arn = first.client("bedrock").create_model_invocation_job(
            jobName="survivor",
            roleArn=helpers.ROLE_ARN,
            modelId=MODEL_ID,
            inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://restart-bucket/in/"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://restart-bucket/out/"}},
            tags=[{"key": "team", "value": "search"}],
            vpcConfig={"subnetIds": ["subnet-1"], "securityGroupIds": ["sg-1"]},
        )["jobArn"]
    with Emulator(settings) as second:
        control = second.client("bedrock")
        job = control.get_model_invocation_job(jobIdentifier=arn)
        assert (job["jobName"], job["status"]) == ("survivor", "Submitted")
        assert job["vpcConfig"] == {"subnetIds": ["subnet-1"], "securityGroupIds": ["sg-1"]}
        s3 = second.client("s3")
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket="restart-bucket")  # a separate process would start empty
        s3.put_object(
            Bucket="restart-bucket", Key="in/records.jsonl", Body=jsonl(text_records(100))
        )
        clock.advance(3 * PHASE + RUN)
        job = control.get_model_invocation_job(jobIdentifier=arn)
        assert (job["status"], job["successRecordCount"]) == ("Completed", 100)
