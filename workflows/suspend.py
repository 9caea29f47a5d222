"""The interactive pick: a suspend node whose parameter is an enum of fit's Pareto choices.

Argo concept: intermediate parameters (https://argo-workflows.readthedocs.io/en/latest/intermediate-inputs/):
an input parameter with an `enum` on a suspend template, mirrored by an output parameter
`valueFrom.supplied`, becomes a dropdown in the UI's RESUME dialog. Enums are static lists in
the manifest, so fit fills PICK_SLOTS slots (repeating its recommendation when it has fewer
choices); Argo substitutes the slots into the enum when the node runs. The DAG passes the
recommendation as the preselected value.
"""

from __future__ import annotations

from hera.workflows import Parameter, Suspend

from workflows.params import PICK_SLOTS

CHOICE = "choice"


def choose_template() -> Suspend:
    slots = [f"{CHOICE}-{i}" for i in range(1, PICK_SLOTS + 1)]
    return Suspend(
        name="choose",
        inputs=[Parameter(name=s, description=f"Pareto choice {i} from fit") for i, s in enumerate(slots, 1)],
        intermediate_parameters=[
            Parameter(
                name=CHOICE,
                description="prefill+decode mappings to deploy; the first is fit's recommendation",
                enum=[f"{{{{inputs.parameters.{s}}}}}" for s in slots],
            )
        ],
    )
