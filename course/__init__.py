"""course: the teacher's kit for the GPT Variants book, kept apart from the model library.

Each command reads the chapters in `notebooks/` (every `*.ipynb`, in file-name order) and
never edits them:

- `python -m course.site`      an offline static website of the book (Sphinx + MyST-NB);
- `python -m course.slides`    each chapter as reveal.js slides that open from disk;
- `python -m course.student`   the student edition: solutions removed, checks kept;
- `python -m course.grade`     run a student's notebook in a separate kernel, grade each exercise;
- `python -m course.guide`     the instructor guide (also a page of the site);
- `python -m course.exercises` where a chapter's exercises depart from the book's convention.
"""
