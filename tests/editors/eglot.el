;;; eglot.el --- drive Emacs + eglot against cl-lsp in batch mode  -*- lexical-binding: t; -*-

;; Run by tests/test_editors.py:
;;   emacs --batch -Q -l editors/emacs/cl-lsp.el -l tests/editors/eglot.el
;; with CL_SCENARIO, CL_FILE (the file to edit) and CL_RESULT (where the JSON report goes) in the
;; environment.  Commands are called the way their keys call them, and the answers to the
;; questions a person would be asked are recorded.  The report is an alist written as JSON.

(load (expand-file-name "common.el" (file-name-directory load-file-name)) nil t)
(require 'eglot)

(defun cl-test-status (server)
  (jsonrpc-request server :workspace/executeCommand '(:command "cl-lsp.status")))

(defun cl-test-start ()
  "Open CL_FILE and M-x eglot; the server comes from `eglot-server-programs' (cl-lsp.el)."
  (find-file (getenv "CL_FILE"))
  (cl-test-note 'eglot_version (if (boundp 'eglot-version) eglot-version "built in"))
  (call-interactively #'eglot)
  (let ((server (cl-test-wait "eglot to connect" #'eglot-current-server)))
    (cl-test-wait "the model" (lambda ()
                                (let ((status (cl-test-status server)))
                                  (and (equal (plist-get status :state) "ready")
                                       (eq (plist-get status :loading) :json-false)))))
    (cl-test-note 'ready t)
    ;; Newer eglot resolves code actions (codeAction/resolve); older runs their command.
    (cl-test-note 'resolve_support
                  (if (plist-get (plist-get (plist-get (eglot-client-capabilities server)
                                                       :textDocument)
                                            :codeAction)
                                 :resolveSupport)
                      t :json-false))
    server))

(defun cl-test-explain ()
  "M-x eglot-code-actions at the end of the function's second line; pick Explain from the menu
and say yes when the server asks to edit the buffer.  Returns the seconds Emacs was busy."
  (goto-char (point-min))
  (forward-line 1)
  (end-of-line)
  (let ((titles nil) (questions nil) (last-nonmenu-event ?\r) (started (float-time)) busy)
    (cl-letf (((symbol-function 'completing-read)
               (lambda (_prompt collection &rest _)
                 (setq titles (mapcar #'car collection))
                 (cl-find-if (lambda (title) (string-prefix-p "cl-lsp: Explain" title))
                             titles)))
              ((symbol-function 'y-or-n-p)
               (lambda (prompt) (push prompt questions) t)))
      (condition-case err
          (call-interactively #'eglot-code-actions)
        (error (cl-test-note 'code_action_error (error-message-string err))))
      (setq busy (- (float-time) started))
      (cl-test-note 'edited_on_return (if (string-prefix-p "#" (buffer-string)) t :json-false))
      (cl-test-wait "the explanation" (lambda () (string-prefix-p "#" (buffer-string))) 60))
    (cl-test-note 'busy_seconds busy)
    (cl-test-note 'edit_seconds (- (float-time) started))
    (cl-test-note 'titles titles)
    (cl-test-note 'questions questions)
    (cl-test-note 'after_action (cl-test-lines))))

(defun cl-test-scenario ()
  (let ((server (cl-test-start)))
    (pcase (getenv "CL_SCENARIO")
      ("complete_and_explain"
       ;; C-M-i at the end of "value = ": the suggestion is the only candidate, so it is
       ;; inserted at once.
       (goto-char (point-max))
       (completion-at-point)
       (cl-test-note 'after_completion (cl-test-lines))
       (cl-test-explain))
      ("explain" (cl-test-explain))
      (other (error "No scenario %s" other)))
    (let ((actions (plist-get (cl-test-status server) :actions)))
      (cl-test-note 'action (aref actions (1- (length actions)))))
    (eglot-shutdown server)))

(cl-test-run #'cl-test-scenario)
