"""One cell of the study, above the task types: its typed spec (:mod:`.spec`) and the runner that
trains, evaluates and submits it (:mod:`.run`)."""
