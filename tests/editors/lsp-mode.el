;;; lsp-mode.el --- drive Emacs + lsp-mode against cl-lsp in batch mode  -*- lexical-binding: t; -*-

;; Run by tests/test_editors.py:
;;   emacs --batch --no-site-file -l editors/emacs/cl-lsp.el -l tests/editors/lsp-mode.el
;; with CL_FILE (the file to edit) and CL_RESULT (where the JSON report goes) in the
;; environment.  As in eglot.el: commands called as their keys call them, the report as JSON.

(require 'cl-lib)
(require 'json)
(setq package-user-dir (expand-file-name "elpa" temporary-file-directory))
(package-initialize) ; what Emacs does before reading an init file: activates the packages
(require 'lsp-mode)
(require 'lsp-completion)

;; A user's answers to lsp-mode's first-run questions, and nothing written outside the test.
(setq lsp-session-file (expand-file-name "lsp-session" temporary-file-directory)
      lsp-auto-guess-root t
      lsp-enable-file-watchers nil
      lsp-restart 'ignore
      lsp-keep-workspace-alive nil)

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

(defun cl-test-status ()
  (lsp-request "workspace/executeCommand" '(:command "cl-lsp.status")))

(defun cl-test-scenario ()
  (find-file (getenv "CL_FILE"))
  (call-interactively #'lsp)                  ; M-x lsp
  (cl-test-wait "cl-lsp to start"
                (lambda ()
                  (cl-find-if (lambda (workspace)
                                (and (eq (lsp--workspace-status workspace) 'initialized)
                                     (eq (lsp--client-server-id (lsp--workspace-client workspace))
                                         'cl-lsp)))
                              (lsp-workspaces))))
  (cl-test-note 'servers (mapcar (lambda (workspace)
                                   (lsp--client-server-id (lsp--workspace-client workspace)))
                                 (lsp-workspaces)))
  (cl-test-wait "the model" (lambda ()
                              (let ((status (cl-test-status)))
                                (and (equal (lsp-get status :state) "ready")
                                     (not (lsp-get status :loading))))))
  (cl-test-note 'ready t)

  ;; C-M-i at the end of "value = ".
  (goto-char (point-max))
  (completion-at-point)
  (cl-test-note 'after_completion (cl-test-lines))

  ;; M-x lsp-execute-code-action inside the function, Explain from the menu.
  (goto-char (point-min))
  (forward-line 1)
  (end-of-line)
  (let ((titles nil))
    (cl-letf (((symbol-function 'completing-read)
               (lambda (_prompt collection &rest _)
                 (setq titles (mapcar (lambda (entry) (if (consp entry) (car entry) entry))
                                      (if (functionp collection)
                                          (funcall collection "" nil t)
                                        collection)))
                 (cl-find-if (lambda (title) (string-match-p "cl-lsp: Explain" title))
                             titles))))
      (call-interactively #'lsp-execute-code-action))
    (cl-test-wait "the explanation" (lambda () (string-prefix-p "#" (buffer-string))) 60)
    (cl-test-note 'titles titles))
  (cl-test-note 'after_action (cl-test-lines))
  (lsp-workspace-shutdown (car (lsp-workspaces))))

(let ((ok t))
  (condition-case err
      (cl-test-scenario)
    (error (setq ok nil)
           (cl-test-note 'error (error-message-string err))))
  (cl-test-note 'ok (if ok t :json-false))
  (cl-test-note 'emacs_version emacs-version)
  (with-temp-file (getenv "CL_RESULT")
    (insert (json-encode cl-test-report)))
  (kill-emacs 0))
