-- Neovim 0.11+ finds this file on 'runtimepath' for vim.lsp.enable('cl_lsp') (as it finds
-- nvim-lspconfig's lsp/*.lua). Override any field with vim.lsp.config('cl_lsp', { ... }).
return require('cl_lsp').config()
