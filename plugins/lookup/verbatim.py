# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: verbatim
short_description: The value of a variable exactly as Ansible loaded it, as data that is never templated
version_added: 0.1.0
description:
  - Returns the value of each named variable as plain data (mappings, lists, strings, numbers,
    booleans, null), without rendering any template inside it.
  - ansible-core trusts strings from playbooks, inventory, vars files and extra vars (C(-e key=value),
    C(-e @file), C(-e '{...}')) as templates, and renders them wherever a task uses the variable, so
    a module option set to the variable would run a pipe lookup hidden in a version or URL, on the
    controller, before the module could refuse it. The variables a lookup receives are the values as
    loaded, not yet rendered, and the plain copies this lookup returns carry no trust, so Ansible
    leaves them alone and the module receives, and validates, the literal strings.
  - A variable whose value is itself a template (a file lookup, say) is returned as that string, not
    rendered; give such a value to the module option directly instead.
options:
  _terms:
    description: Names of the variables.
    type: list
    elements: str
    required: true
author:
  - zkrollout.dc contributors (@zkrollout)
"""

EXAMPLES = r"""
- name: Seed the release given as extra vars (-e @release.yml), as data
  zkrollout.dc.rollout:
    release: "{{ lookup('zkrollout.dc.verbatim', 'zkrollout_release') }}"
"""

RETURN = r"""
_raw:
  description: The value of each variable, as plain data.
  type: list
  elements: raw
"""

import json

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase


class LookupModule(LookupBase):
    """Copies variables as loaded into plain JSON data, which carries no template trust."""

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        values = []
        for name in terms:
            if not isinstance(name, str) or name not in (variables or {}):
                raise AnsibleLookupError("zkrollout.dc.verbatim: no variable named %r" % (name,))
            try:
                # A JSON round trip keeps the data and drops everything else, template trust included.
                values.append(json.loads(json.dumps(variables[name])))
            except (TypeError, ValueError) as exc:
                raise AnsibleLookupError("zkrollout.dc.verbatim: variable %s holds a value that is not plain data (%s); "
                                         "give it as YAML or JSON" % (name, exc)) from exc
        return values
