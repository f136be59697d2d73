;;; common.el --- what eglot.el and lsp-mode.el share  -*- lexical-binding: t; -*-

;; Loaded first by each driver: the packages, a report (an alist written as JSON to CL_RESULT),
;; waiting on the server, and the run that always writes the report and exits.

(require 'cl-lib)
(require 'json)
(setq package-user-dir (expand-file-name "elpa" temporary-file-directory))
(package-initialize) ; what Emacs does before reading an init file: activates the packages

(defvar cl-test-report nil)

(defun cl-test-note (key value)
  (push (cons key value) cl-test-report))

(defun cl-test-wait (what predicate &optional seconds)
  "Let Emacs read the server until PREDICATE is true; fail after SECONDS (30)."
  (let ((deadline (+ (float-time) (or seconds 30))) value)
    (while (not (setq value (funcall predicate)))
      (when (> (float-time) deadline)
        (error "Timed out waiting for %s" what))
      (accept-process-output nil 0.05))
    value))

(defun cl-test-lines ()
  (split-string (buffer-substring-no-properties (point-min) (point-max)) "\n"))

(defun cl-test-run (scenario)
  "Call SCENARIO, note whether it failed, write the report and exit."
  (let ((ok t))
    (condition-case err
        (funcall scenario)
      (error (setq ok nil)
             (cl-test-note 'error (error-message-string err))))
    (cl-test-note 'ok (if ok t :json-false))
    (cl-test-note 'emacs_version emacs-version)
    (with-temp-file (getenv "CL_RESULT")
      (insert (json-encode cl-test-report)))
    (kill-emacs 0)))
