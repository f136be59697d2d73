-- cl-lsp for Neovim 0.11+ (vim.lsp.config / vim.lsp.enable).
-- Copy to ~/.config/nvim/plugin/cl-lsp.lua, or `dofile` it from your init.lua.
vim.lsp.config('cl_lsp', {
  cmd = { 'cl-lsp', '--stdio' },
  filetypes = {
    'python', 'javascript', 'javascriptreact', 'typescript', 'typescriptreact', 'java',
    'c', 'cpp', 'cs', 'go', 'rust', 'php', 'sh', 'bash', 'lua', 'ruby',
  },
  root_markers = { '.git' },
  -- Every setting and its default: see README.md ("Use it from an editor").
  init_options = {
    completion = { maxTokens = 128, maxTokensSingleLine = 48 },
  },
})
vim.lsp.enable('cl_lsp')

-- Neovim 0.12+: ghost text from textDocument/inlineCompletion; <Tab> accepts it.
if vim.lsp.inline_completion then
  vim.lsp.inline_completion.enable()
  vim.keymap.set('i', '<Tab>', function()
    if not vim.lsp.inline_completion.get() then
      return '<Tab>'
    end
  end, { expr = true, desc = 'Accept the cl-lsp suggestion' })
end
