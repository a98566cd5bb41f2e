"""tinylm_course: the machinery that runs the course around the ``tinylm`` library.

The library (``tinylm``) is what the labs teach and import; this package is what the course's
authors, teachers and CI use to run, check and grade the labs and to build the book.  It may
import ``tinylm``; ``tinylm`` never imports it (a test reads the import graph).

- ``tinylm_course.execute``      running a worked lab and saving it with its outputs
- ``tinylm_course.exercises``    the exercise edition of a lab (solutions removed)
- ``tinylm_course.grading``      grading a student's lab with nbval
- ``tinylm_course.isolation``    the answer processes: a submission's code runs apart from the checks, which read its values as data
- ``tinylm_course.dataflow``     which values a check reads, found by reading the lab's code
- ``tinylm_course.nbval_plugin`` nbval adapted to the labs: stderr not compared, timeouts and dead kernels reported
- ``tinylm_course.bench``        each lab's seconds and peak memory on one core
- ``tinylm_course.processes``    stopping a tool's whole process tree, and measuring its memory
- ``tinylm_course.book``         the book's Sphinx extension and its glossary
- ``tinylm_course.book_reading`` the book for readers: Chinese search, the Chinese summaries' language, accessible citations
- ``tinylm_course.diagrams``     the book's conceptual diagrams: boxes and arrows drawn by code

Commands: ``python -m tinylm_course {execute,exercise,grade,bench} ...`` (see ``--help``).
"""
