;;; lsp-mode.el --- drive Emacs + lsp-mode against cl-lsp in batch mode  -*- lexical-binding: t; -*-

;; Run by tests/test_editors.py:
;;   emacs --batch --no-site-file -l editors/emacs/cl-lsp.el -l tests/editors/lsp-mode.el
;; with CL_FILE (the file to edit) and CL_RESULT (where the JSON report goes) in the
;; environment.  As in eglot.el: commands called as their keys call them, the report as JSON.

(load (expand-file-name "common.el" (file-name-directory load-file-name)) nil t)
(require 'lsp-mode)
(require 'lsp-completion)

;; A user's answers to lsp-mode's first-run questions, and nothing written outside the test.
(setq lsp-session-file (expand-file-name "lsp-session" temporary-file-directory)
      lsp-auto-guess-root t
      lsp-enable-file-watchers nil
      lsp-restart 'ignore
      lsp-keep-workspace-alive nil)

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

(cl-test-run #'cl-test-scenario)
