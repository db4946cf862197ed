"""The NEW SERVER form's Kubeflow fields in a real browser (Chromium through Playwright), against a dev
gateway on the Kubernetes backend (the fake API server) and Kubeflow's own spawner config."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.async_api import Page, expect

from tests.fakes.kube_api import FakeKubeAPI

from .browser import browser_page, dev_gateway_running, expect_path, form_ready, server_row, sign_in
from .test_kubeflow_form import AFFINITY, CODE_SERVER, RSTUDIO, TOLERATIONS, kubeflow_form

ALICE_NS = "kubeflow-alice-example-com"  # the namespace a dev gateway gives alice@example.com


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with browser_page() as opened:
        yield opened


def spawner_file(tmp_path: Path, **changes: Any) -> str:
    form = kubeflow_form()
    for section, values in changes.items():
        form[section] = {**form[section], **values}
    path = tmp_path / "spawner_ui_config.yaml"
    path.write_text(yaml.safe_dump({"spawnerFormDefaults": form}))
    return str(path)


def kubernetes_gateway(kube_api: FakeKubeAPI, tmp_path: Path, spawner: str) -> Any:
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    return dev_gateway_running(
        tmp_path, backend="kubernetes", kubeconfig=str(kubeconfig), profiles="gateway", spawner_config=spawner
    )


async def test_the_server_type_gpus_and_scheduling_choices_make_the_notebook(
    page: Page, kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    spawner = spawner_file(tmp_path, cpu={"readOnly": True})
    with kubernetes_gateway(kube_api, tmp_path, spawner) as gateway:
        await page.goto(gateway.url(f"/notebooks/new?ns={ALICE_NS}"))
        await sign_in(page, "alice@example.com")
        await form_ready(page)
        await page.get_by_label("Name", exact=True).fill("stats")
        jupyter_images = page.get_by_label("Image", exact=True)
        await expect(jupyter_images).to_be_visible()
        # The server type switches the image list to that type's images.
        await page.get_by_label("VS Code", exact=True).check()
        await expect(jupyter_images).to_be_hidden()
        await expect(page.get_by_label("VS Code image")).to_have_value(CODE_SERVER)
        await page.get_by_label("RStudio", exact=True).check()
        await expect(page.get_by_label("VS Code image")).to_be_hidden()
        await expect(page.get_by_label("RStudio image").locator("option")).to_have_text(
            ["kubeflow/kubeflow/notebook-servers/rstudio-tidyverse:latest"]  # hideRegistry: true
        )
        # GPUs: the vendor is asked for once there is a count.
        vendor = page.get_by_label("GPU vendor")
        await expect(vendor).to_be_hidden()
        await expect(page.get_by_label("Number of GPUs").locator("option")).to_have_text(["None", "1", "2", "4", "8"])
        await page.get_by_label("Number of GPUs").select_option("2")
        await expect(vendor.locator("option")).to_have_text(["Choose a vendor", "NVIDIA", "AMD", "Intel Gaudi"])
        await vendor.select_option(label="AMD")
        await page.get_by_label("Affinity").select_option(label="Dedicated Node")
        await page.get_by_label("Tolerations").select_option(label="4 CPU 8Gb Mem")
        shm = page.get_by_label("Enable shared memory")
        await expect(shm).to_be_checked()  # the config's default
        # CPU is read-only in this config: shown, not editable, and the server gets the default.
        await expect(page.get_by_label("CPU", exact=True)).not_to_be_editable()
        await page.get_by_label("Memory limit").fill("2Gi")
        await page.get_by_role("button", name="LAUNCH").click()
        await expect_path(page, "/notebooks")
        await expect(server_row(page, "stats").locator("td.gpus")).to_have_text("2 AMD")  # the list's GPUs
    notebook = kube_api.get("notebooks", ALICE_NS, "stats")
    assert notebook is not None
    annotations = notebook["metadata"]["annotations"]
    assert annotations["notebooks.kubeflow.org/server-type"] == "group-two"
    assert annotations["notebooks.kubeflow.org/http-rewrite-uri"] == "/"
    pod = notebook["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == RSTUDIO
    assert container["resources"]["limits"] == {"cpu": "0.6", "memory": "2Gi", "amd.com/gpu": "2"}
    assert container["resources"]["requests"]["cpu"] == "0.5"
    assert (pod["affinity"], pod["tolerations"]) == (AFFINITY, TOLERATIONS)
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]


async def test_a_gpu_request_over_the_quota_is_shown_beside_the_gpus(
    page: Page, kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    spawner = spawner_file(tmp_path, gpus={"readOnly": False})
    with kubernetes_gateway(kube_api, tmp_path, spawner) as gateway:
        await page.goto(gateway.url(f"/notebooks/new?ns={ALICE_NS}"))
        await sign_in(page, "alice@example.com")
        await form_ready(page)
        # A quota of one NVIDIA GPU in the namespace (as the Profiles page sets one).
        quota = {"metadata": {"name": "gpus"}, "spec": {"hard": {"requests.nvidia.com/gpu": "1"}}}
        kube_api.create("resourcequotas", quota, ALICE_NS)
        await page.get_by_label("Name", exact=True).fill("trainer")
        await page.get_by_label("Number of GPUs").select_option("2")
        await page.get_by_label("GPU vendor").select_option(label="NVIDIA")
        await page.get_by_role("button", name="LAUNCH").click()
        await expect(page.locator("#gpus-error")).to_contain_text("allows 1 nvidia.com/gpu")
        await expect(page.get_by_role("alert").first).to_contain_text("correct the highlighted field")
        await page.get_by_label("Number of GPUs").select_option("1")
        await page.get_by_role("button", name="LAUNCH").click()
        await expect_path(page, "/notebooks")
    notebook = kube_api.get("notebooks", ALICE_NS, "trainer")
    assert notebook is not None
    assert notebook["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


async def test_what_the_config_does_not_offer_is_not_shown(page: Page, kube_api: FakeKubeAPI, tmp_path: Path) -> None:
    bare = kubeflow_form()
    for section in ("imageGroupOne", "imageGroupTwo"):
        del bare[section]
    bare["gpus"]["value"]["vendors"] = []
    bare["affinityConfig"]["options"] = []
    path = tmp_path / "bare.yaml"
    path.write_text(yaml.safe_dump({"spawnerFormDefaults": bare}))
    with kubernetes_gateway(kube_api, tmp_path, str(path)) as gateway:
        await page.goto(gateway.url(f"/notebooks/new?ns={ALICE_NS}"))
        await sign_in(page, "alice@example.com")
        await form_ready(page)
        await expect(page.get_by_label("Image", exact=True)).to_be_visible()
        for hidden in ("VS Code", "RStudio", "Number of GPUs", "Affinity"):
            await expect(page.get_by_label(hidden)).to_have_count(0)
        await expect(page.get_by_label("Tolerations")).to_be_visible()  # it has its options still


async def test_the_configs_data_volumes_and_configurations_start_in_the_form(
    page: Page, kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    pvc_spec = {"resources": {"requests": {"storage": "20Gi"}}, "accessModes": ["ReadWriteMany"]}
    volumes = [
        {
            "mount": "/home/jovyan/datavol-1",
            "newPvc": {"metadata": {"name": "{notebook-name}-datavol-1"}, "spec": pvc_spec},
        },
        {"mount": "/home/jovyan/shared", "existingSource": {"persistentVolumeClaim": {"claimName": "team-data"}}},
    ]
    spawner = spawner_file(tmp_path, dataVolumes={"value": volumes}, configurations={"value": ["add-gcp-secret"]})
    with kubernetes_gateway(kube_api, tmp_path, spawner) as gateway:
        await page.goto(gateway.url(f"/notebooks/new?ns={ALICE_NS}"))
        await sign_in(page, "alice@example.com")
        await form_ready(page)
        gcp = {"selector": {"matchLabels": {"add-gcp-secret": "true"}}, "desc": "Add GCP credentials"}
        kube_api.create("poddefaults", {"metadata": {"name": "add-gcp-secret"}, "spec": gcp}, ALICE_NS)
        await page.reload()
        await form_ready(page)
        first, second = (
            page.locator("#data-volume-list > fieldset").nth(0),
            page.locator("#data-volume-list > fieldset").nth(1),
        )
        await expect(page.locator("#data-volume-list > fieldset")).to_have_count(2)
        await expect(first.get_by_label("Volume")).to_have_value("{notebook-name}-datavol-1")
        await expect(first.get_by_label("Size")).to_have_value("20Gi")
        await expect(first.get_by_label("Mount path")).to_have_value("/home/jovyan/datavol-1")
        await expect(second.get_by_label("Source")).to_have_value("existing")
        await expect(second.get_by_label("Volume")).to_have_value("team-data")
        await expect(second.get_by_label("Size")).to_be_hidden()
        await expect(page.get_by_label("Add GCP credentials")).to_be_checked()
        await page.get_by_label("Name", exact=True).fill("stats")
        await expect(first.get_by_label("Volume")).to_have_value("stats-datavol-1")  # follows the server's name
        await page.get_by_role("button", name="LAUNCH").click()
        await expect_path(page, "/notebooks")
    notebook = kube_api.get("notebooks", ALICE_NS, "stats")
    assert notebook is not None
    assert notebook["metadata"]["labels"]["add-gcp-secret"] == "true"
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in notebook["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert sorted(claims) == ["stats-datavol-1", "stats-workspace", "team-data"]
    pvc = kube_api.get("persistentvolumeclaims", ALICE_NS, "stats-datavol-1")
    assert pvc is not None and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "20Gi"
