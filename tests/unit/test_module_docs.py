# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The documented release options follow the model: every field a user writes, none that the module writes."""

from __future__ import annotations

from dataclasses import fields

import yaml

from ansible_collections.zkrollout.dc.plugins.module_utils.controller.adapter import given
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import Artifact, ReleaseEntry, ServiceSpec
from ansible_collections.zkrollout.dc.plugins.modules import rollout, staging


def _json_names(payload_cls):
    return {spec.metadata.get("json_name") or spec.name for spec in fields(payload_cls)}


def test_the_release_suboptions_of_rollout_are_the_fields_of_a_service_spec_and_of_a_release():
    release = yaml.safe_load(rollout.DOCUMENTATION)["options"]["release"]["suboptions"]

    assert set(release) == {"id", "parallel", "services"}
    assert set(release["services"]["suboptions"]) == _json_names(ServiceSpec)
    assert set(release["services"]["suboptions"]["artifact"]["suboptions"]) == _json_names(Artifact)
    assert set(rollout.RELEASE_OPTIONS["services"]["options"]) == _json_names(ServiceSpec)


def test_no_release_option_is_a_field_only_the_module_writes():
    written_by_the_module = _json_names(ReleaseEntry) - _json_names(ServiceSpec)
    documented = yaml.safe_load(rollout.DOCUMENTATION)["options"]["release"]["suboptions"]["services"]["suboptions"]
    staging_options = yaml.safe_load(staging.DOCUMENTATION)["options"]

    assert written_by_the_module == {"rollout", "service", "signature"}
    assert not written_by_the_module & set(documented)
    assert not {"signature", "service"} & set(staging_options)


def test_given_drops_the_absent_suboptions_at_every_level_and_keeps_false_and_empty_values():
    service = {"name": "A", "depends_on": [], "max_parallel": None, "artifact": {"url": "u", "sha256": None}}
    shaped = {"id": None, "parallel": False, "services": [service]}

    assert given(shaped) == {"parallel": False, "services": [{"name": "A", "depends_on": [], "artifact": {"url": "u"}}]}
