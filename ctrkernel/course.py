"""The course's map: its questions, its chapters, and what each chapter can do on this host.

The welcome notebook shows `chapter_plan(doctor())`: for every chapter, whether it runs for real
here, runs with a fallback (and which), and why, so a learner on Binder knows from the first page
what is measured on their machine and what is shown from recordings.
"""
import html
from dataclasses import dataclass

QUESTIONS = [
    ("Q1", "가상화와 컨테이너의 차이?", "What is the difference between virtualization and containers?"),
    ("Q2", "컨테이너란 무엇인가?", "What is a container?"),
    ("Q3", "가상화의 환경불일치의 의미는?",
     'What does "environment mismatch" (configuration drift) between VMs mean?'),
    ("Q4", "컨테이너의 장점은?", "What are the advantages of containers?"),
    ("Q5", "가상화란?", "What is virtualization?"),
    ("Q6", "컨테이너 엔진만 있으면 구동가능?",
     "Does a container run anywhere a container engine exists? (and where does that stop being true?)"),
    ("Q7", "가상화와 컨테이너 집적도 차이란 무엇인가?",
     "What is the difference in density (how many instances fit on one host)?"),
]


@dataclass(frozen=True)
class Chapter:
    prefix: str
    title: str
    answers: tuple
    needs: tuple       # probe checks the chapter's experiments need to run for real
    fallback: str      # what the chapter shows when they are missing


CHAPTERS = [
    Chapter("00", "Welcome: the questions, how to run the course, what this machine allows", (),
            (), "nothing to fall back from: this chapter only asks the host"),
    Chapter("01", "Virtualization and containers: start time and overhead measured", ("Q5", "Q1"),
            ("qemu", "vm_kernel", "pidns"),
            "VM measurements recorded on a described machine (data/), labelled as such"),
    Chapter("02", "A container is a process: namespaces, chroot, pivot_root, capabilities", ("Q2",),
            ("mountns", "pidns", "utsns", "netns", "pivot_root"),
            "the host refuses namespaces: each demo explains what it would have shown and why "
            "it cannot run here"),
    Chapter("03", "cgroups: memory, CPU and process limits, live metrics", ("Q4",),
            ("cgroups",),
            "limits are not enforced; the session's own cgroup and process tree are observed"),
    Chapter("04", "Images and layers: layers by hand, whiteouts, sharing, history, build", ("Q4",),
            ("busybox",), "layers and the store work unprivileged; running containers may not"),
    Chapter("05", "Portability and immutable infrastructure", ("Q3", "Q6"), ("pidns",),
            "images are built and inspected; running them depends on namespaces"),
    Chapter("06", "Density: the 16 vs 40 experiment in miniature", ("Q7",),
            ("qemu", "vm_kernel", "pidns"), "recorded density results from data/, labelled"),
    Chapter("07", "Operating containers the Docker way", ("Q4",), ("pidns",),
            "the API is shown; containers run without isolation or not at all"),
    Chapter("08", "History and ecosystem: a sourced timeline", (), (), "nothing: prose and data"),
]


@dataclass(frozen=True)
class ChapterStatus:
    chapter: Chapter
    runs_for_real: bool
    missing: tuple

    @property
    def verdict(self):
        if self.runs_for_real:
            return "runs for real"
        return f"fallback: {self.chapter.fallback}"


def chapter_plan(report):
    """Each chapter with whether its experiments run for real on the host `report` describes."""
    plan = []
    for ch in CHAPTERS:
        missing = tuple(n for n in ch.needs if not report.ok(n))
        plan.append(ChapterStatus(ch, not missing, missing))
    return ChapterPlan(plan)


class ChapterPlan(list):
    """A list of ChapterStatus that renders as a table in notebooks and as text elsewhere."""

    def __str__(self):
        lines = []
        for s in self:
            why = f" (missing: {', '.join(s.missing)})" if s.missing else ""
            lines.append(f"{s.chapter.prefix}  {s.verdict}{why}")
        return "\n".join(lines)

    def _repr_html_(self):
        e = html.escape
        rows = "".join(
            f"<tr><td>{s.chapter.prefix}</td><td style='text-align:left'>{e(s.chapter.title)}</td>"
            f"<td style='text-align:left'>{'&#x2705; ' if s.runs_for_real else '&#x26A0;&#xFE0F; '}"
            f"{e(s.verdict)}"
            + (f"<br><small>missing: {e(', '.join(s.missing))}</small>" if s.missing else "")
            + "</td></tr>"
            for s in self
        )
        return ("<table><thead><tr><th>#</th><th style='text-align:left'>chapter</th>"
                f"<th style='text-align:left'>on this machine</th></tr></thead><tbody>{rows}"
                "</tbody></table>")


def questions_table():
    """The seven guiding questions, Korean and English, as a markdown table."""
    rows = "\n".join(f"| {q} | {ko} | {en} |" for q, ko, en in QUESTIONS)
    return "| # | 한국어 | English |\n|---|---|---|\n" + rows
