"""Jobs: JobSpec (typed, validated), run_job(spec, on_event, cancel), progress events, resume."""

from engine.jobs.events import JobEvent
from engine.jobs.runner import JobCannotStart, JobSummary, run_job
from engine.jobs.spec import JobSpec, build_spec, read_job_file

__all__ = ["JobEvent", "JobCannotStart", "JobSummary", "run_job", "JobSpec", "build_spec", "read_job_file"]
