;;; cl-lsp.el --- use cl-lsp (Code Llama completions) with eglot  -*- lexical-binding: t; -*-

;; Load from your init file: (load "/path/to/editors/emacs/cl-lsp.el")
;; eglot is built into Emacs 29+; suggestions arrive through completion-at-point.

(with-eval-after-load 'eglot
  (add-to-list 'eglot-server-programs
               '((python-mode python-ts-mode js-mode js-ts-mode typescript-ts-mode
                  c-mode c-ts-mode c++-mode c++-ts-mode go-mode go-ts-mode rust-mode
                  rust-ts-mode java-mode sh-mode lua-mode ruby-mode)
                 . ("cl-lsp" "--stdio"
                    :initializationOptions
                    (:completion (:maxTokens 128 :maxTokensSingleLine 48))))))

(provide 'cl-lsp)
;;; cl-lsp.el ends here
