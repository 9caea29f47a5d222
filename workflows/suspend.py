"""The interactive pick: a suspend node whose parameter is an enum of fit's Pareto choices.

Argo concept: intermediate parameters (https://argo-workflows.readthedocs.io/en/latest/intermediate-inputs/):
an input parameter with an `enum` on a suspend template, mirrored by an output parameter
`valueFrom.supplied`, becomes a dropdown in the UI's RESUME dialog. Enums are static lists in
the manifest, so fit fills PICK_SLOTS slots (repeating its recommendation when it has fewer
choices); Argo substitutes the slots into the enum when the node runs. The DAG passes the
recommendation as the preselected value.

The node waits at most `pick-timeout`; then Argo resumes it with the output's default, `auto`,
and `pick` keeps fit's recommendation. The wait holds no GPU: only online bench pods take the
GPU semaphore.
"""

from __future__ import annotations

from hera.workflows import Parameter, Suspend
from hera.workflows.models import SuppliedValueFrom, ValueFrom

from slaprof.workflows.params import AUTO_CHOICE, PICK_SLOTS

CHOICE = "choice"
CHOICE_DESCRIPTION = "prefill+decode mappings to deploy; the first is fit's recommendation"


def choose_template() -> Suspend:
    slots = [f"{CHOICE}-{i}" for i in range(1, PICK_SLOTS + 1)]
    return Suspend(
        name="choose",
        duration="{{workflow.parameters.pick-timeout}}",
        inputs=[Parameter(name=s, description=f"Pareto choice {i} from fit") for i, s in enumerate(slots, 1)]
        + [
            Parameter(
                name=CHOICE, description=CHOICE_DESCRIPTION, enum=[f"{{{{inputs.parameters.{s}}}}}" for s in slots]
            )
        ],
        outputs=[
            Parameter(
                name=CHOICE,
                description=CHOICE_DESCRIPTION + f"; `{AUTO_CHOICE}` (fit's) when nobody picked within pick-timeout",
                value_from=ValueFrom(supplied=SuppliedValueFrom(), default=AUTO_CHOICE),
            )
        ],
    )
