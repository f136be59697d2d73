;;; cl-lsp.el --- Code Llama completions and code actions through cl-lsp  -*- lexical-binding: t; -*-

;; Package-Requires: ((emacs "27.1"))

;;; Commentary:

;; Load from your init file, before or after eglot / lsp-mode:
;;
;;   (setq cl-lsp-settings '(:completion (:maxTokens 64)))   ; optional, see README.md
;;   (load "/path/to/cl-lsp/editors/emacs/cl-lsp.el")
;;
;; eglot (built into Emacs 29+; the elpa-eglot package on older Emacs): `M-x eglot' in a
;; buffer of one of `cl-lsp-modes' starts cl-lsp, or (add-hook 'python-mode-hook #'eglot-ensure).
;; Suggestions come through `completion-at-point' (C-M-i, or company / corfu), code actions
;; through `eglot-code-actions'.  eglot runs one server per buffer, so for these modes cl-lsp
;; takes the place of the usual one; set `cl-lsp-modes' to the modes you want it for, or use
;; lsp-mode, which runs cl-lsp next to the usual server.
;;
;; lsp-mode: `M-x lsp' (or `lsp-deferred' in a mode hook) starts cl-lsp as an add-on server
;; next to the language's usual one.  Suggestions come through `completion-at-point', code
;; actions through `lsp-execute-code-action'.  With lsp-mode 9.0.1+, suggestions also appear as
;; ghost text (`lsp-inline-completion-mode', after `lsp-inline-completion-idle-delay' seconds;
;; RET takes one); `cl-lsp-inline-key' asks for one at once.

;;; Code:

(defgroup cl-lsp nil
  "Code Llama completions and code actions through the cl-lsp language server."
  :group 'tools
  :prefix "cl-lsp-")

(defcustom cl-lsp-program '("cl-lsp" "--stdio")
  "The command that starts cl-lsp, and its arguments."
  :type '(repeat string))

(defcustom cl-lsp-settings nil
  "cl-lsp settings, sent as initializationOptions when the server starts.
A plist in the server's camelCase, for example
  (:model (:path \"/models/codellama-7b.Q4_K_M.gguf\")
   :completion (:maxTokens 64))
Every setting is listed in README.md."
  :type 'plist)

(defcustom cl-lsp-modes
  '(python-mode python-ts-mode js-mode js-ts-mode typescript-ts-mode tsx-ts-mode
    c-mode c-ts-mode c++-mode c++-ts-mode go-mode go-ts-mode rust-mode rust-ts-mode
    java-mode java-ts-mode sh-mode bash-ts-mode lua-mode ruby-mode ruby-ts-mode php-mode)
  "Major modes eglot uses cl-lsp for (set before loading this file; nil: none)."
  :type '(repeat symbol))

(defcustom cl-lsp-languages
  '("python" "javascript" "typescript" "typescriptreact" "javascriptreact" "c" "cpp" "go"
    "rust" "java" "shellscript" "lua" "ruby" "php")
  "Language ids lsp-mode starts cl-lsp for, next to their usual server."
  :type '(repeat string))

(defcustom cl-lsp-inline-key (kbd "C-c TAB")
  "Key that asks cl-lsp for a ghost-text suggestion in lsp-mode 9.0.1+ (nil: none)."
  :type '(choice key-sequence (const nil)))

(defun cl-lsp--initialization-options (&rest _)
  "`cl-lsp-settings' as a JSON object (an empty one when there are none)."
  (or cl-lsp-settings (make-hash-table)))

(defun cl-lsp--eglot-contact (&optional _interactive)
  "The eglot contact for cl-lsp.
`cl-lsp-program' and `cl-lsp-settings' are read when the server starts."
  `(,@cl-lsp-program :initializationOptions cl-lsp--initialization-options))

(with-eval-after-load 'eglot
  (when cl-lsp-modes
    (add-to-list 'eglot-server-programs (cons cl-lsp-modes #'cl-lsp--eglot-contact))))

(declare-function lsp-register-client "lsp-mode")
(declare-function make-lsp-client "lsp-mode")
(declare-function lsp-stdio-connection "lsp-mode")
(declare-function lsp-activate-on "lsp-mode")
(declare-function lsp-inline-completion-display "lsp-inline-completion")
(defvar lsp-mode-map)

(with-eval-after-load 'lsp-mode
  (lsp-register-client
   (make-lsp-client
    :new-connection (lsp-stdio-connection (lambda () cl-lsp-program))
    :activation-fn (apply #'lsp-activate-on cl-lsp-languages)
    :add-on? t
    :priority -2
    :server-id 'cl-lsp
    :initialization-options #'cl-lsp--initialization-options))
  (when (and cl-lsp-inline-key (require 'lsp-inline-completion nil t))
    (define-key lsp-mode-map cl-lsp-inline-key #'lsp-inline-completion-display)))

(provide 'cl-lsp)
;;; cl-lsp.el ends here
