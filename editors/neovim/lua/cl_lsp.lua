--- cl-lsp for Neovim: Code Llama completions (ghost text or the completion menu) and code actions.
---
--- Put this folder (editors/neovim) on 'runtimepath', e.g. with lazy.nvim
---   { dir = '/path/to/cl-lsp/editors/neovim', config = function() require('cl_lsp').setup() end }
--- or in init.lua
---   vim.opt.runtimepath:append('/path/to/cl-lsp/editors/neovim')
---   require('cl_lsp').setup({ init_options = { completion = { maxTokens = 64 } } })
---
--- What setup() does depends on the Neovim version:
---   0.11+      vim.lsp.config('cl_lsp', ...) and vim.lsp.enable('cl_lsp')
---   0.7-0.10   starts the server itself on FileType (vim.lsp.start, or start_client on 0.7)
--- and, once the server is attached to a buffer:
---   0.12+      ghost text from textDocument/inlineCompletion (vim.lsp.inline_completion);
---              `accept_key` (<Tab>) takes it, and is an ordinary <Tab> when there is none
---   0.11       the completion menu, opened automatically after . ( [ { , : = (vim.lsp.completion)
---   0.7-0.10   the completion menu on <C-x><C-o> ('omnifunc')
--- Code actions (Explain, Fix, Add documentation, Write tests) come through
--- vim.lsp.buf.code_action() on every version.
---
--- nvim-lspconfig: on Neovim 0.11+ this folder's lsp/cl_lsp.lua is a config like lspconfig's own,
--- so `vim.lsp.enable('cl_lsp')` is all it takes; with the older require('lspconfig') framework,
--- call require('cl_lsp').lspconfig({ ... }) instead of setup().
---
--- Every setting the server takes is in README.md ("Use it from an editor"); they go in
--- `init_options`, in camelCase, as nested tables.

local M = {}

M.name = 'cl_lsp'

--- Defaults for setup(), lspconfig() and config(); each key can be overridden.
M.defaults = {
  cmd = { 'cl-lsp', '--stdio' },
  filetypes = {
    'python', 'javascript', 'javascriptreact', 'typescript', 'typescriptreact', 'java',
    'c', 'cpp', 'cs', 'go', 'rust', 'php', 'sh', 'bash', 'lua', 'ruby',
  },
  root_markers = { '.git' },
  -- Server settings (initializationOptions), e.g. { model = { path = '/models/x.gguf' } }.
  init_options = nil,
  -- Neovim 0.12+: show suggestions as ghost text (false: only through the completion menu).
  inline = true,
  -- Insert-mode key that accepts the ghost text (false: map nothing).
  accept_key = '<Tab>',
  -- Called after cl-lsp's own on_attach, with (client, bufnr).
  on_attach = nil,
}

local function options(opts)
  return vim.tbl_deep_extend('force', {}, M.defaults, opts or {})
end

--- The part of an inline suggestion's life that happens in the buffer: ghost text and its key.
local function enable_inline(bufnr, opts)
  vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
  if opts.accept_key then
    vim.keymap.set('i', opts.accept_key, function()
      if not vim.lsp.inline_completion.get() then
        return opts.accept_key
      end
    end, { buffer = bufnr, expr = true, desc = 'cl-lsp: accept the suggestion' })
  end
end

local ACCEPT_COMMAND = 'cl-lsp.accept' -- every cl-lsp suggestion carries it

local function suggestion_of(item)
  return type(item) == 'table' and type(item.command) == 'table'
    and item.command.command == ACCEPT_COMMAND and item.textEdit and item.textEdit.newText
end

-- Neovim 0.11+ inserts only the first word of a plain-text item (up to a space); insert the
-- whole first line of ours instead.
local function first_line_as_word(item)
  local text = suggestion_of(item)
  return text and { word = vim.split(text, '\n', { plain = true })[1] } or {}
end

-- The completion menu inserts one line (0.11+) or a line with NULs for newlines (0.7-0.10):
-- after an accept, put the suggestion's lines in place of what was inserted.
local function insert_all_lines()
  local event = vim.v.event
  if type(event) == 'table' and event.reason and event.reason ~= 'accept' then
    return
  end
  local completed = vim.v.completed_item
  local item = vim.tbl_get(completed, 'user_data', 'nvim', 'lsp', 'completion_item')
  local text = suggestion_of(item)
  if not text or not text:find('\n') or not completed.word then
    return
  end
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  local start = col - #completed.word
  if start < 0 then
    return
  end
  local new_lines = vim.split(text, '\n', { plain = true })
  vim.api.nvim_buf_set_text(0, row - 1, start, row - 1, col, new_lines)
  local last = #new_lines == 1 and start + #new_lines[1] or #new_lines[#new_lines]
  vim.api.nvim_win_set_cursor(0, { row + #new_lines - 1, last })
end

--- Turn on the best way this Neovim has to show suggestions, for one attached buffer.
function M.attach(client, bufnr, opts)
  opts = options(opts)
  if opts.inline and vim.lsp.inline_completion then
    enable_inline(bufnr, opts)
  elseif vim.lsp.completion and vim.lsp.completion.enable then
    vim.lsp.completion.enable(true, client.id, bufnr,
      { autotrigger = true, convert = first_line_as_word })
  else
    vim.bo[bufnr].omnifunc = 'v:lua.vim.lsp.omnifunc'
  end
  vim.api.nvim_create_autocmd('CompleteDone', {
    group = vim.api.nvim_create_augroup('cl_lsp_buffer_' .. bufnr, { clear = true }),
    buffer = bufnr,
    callback = insert_all_lines,
  })
  if opts.on_attach then
    opts.on_attach(client, bufnr)
  end
end

--- The client configuration, in the shape vim.lsp.config() takes (Neovim 0.11+).
function M.config(opts)
  opts = options(opts)
  return {
    cmd = opts.cmd,
    filetypes = opts.filetypes,
    root_markers = opts.root_markers,
    init_options = opts.init_options,
    on_attach = function(client, bufnr)
      M.attach(client, bufnr, opts)
    end,
  }
end

-- Neovim 0.7-0.10: no vim.lsp.config, so start (or reuse) a client per project root ourselves.

local function find_root(bufnr, markers)
  local path = vim.api.nvim_buf_get_name(bufnr)
  local dir = path ~= '' and vim.fn.fnamemodify(path, ':p:h') or vim.loop.cwd()
  local current = dir
  while true do
    for _, marker in ipairs(markers) do
      if vim.loop.fs_stat(current .. '/' .. marker) then
        return current
      end
    end
    local parent = vim.fn.fnamemodify(current, ':h')
    if parent == current then
      return dir -- no marker: the file's own folder
    end
    current = parent
  end
end

local legacy_clients = {} -- root_dir -> client id (Neovim 0.7, which has no vim.lsp.start)

local function start_legacy(bufnr, opts)
  local config = M.config(opts)
  config.name = M.name
  config.root_dir = find_root(bufnr, opts.root_markers)
  config.filetypes, config.root_markers = nil, nil
  if vim.lsp.start then -- 0.8-0.10: reuses a client with the same name and root
    vim.lsp.start(config, { bufnr = bufnr })
    return
  end
  local id = legacy_clients[config.root_dir]
  if not id or not vim.lsp.get_client_by_id(id) then
    id = vim.lsp.start_client(config)
    legacy_clients[config.root_dir] = id
  end
  if id then
    vim.lsp.buf_attach_client(bufnr, id)
  end
end

--- Start cl-lsp for the configured filetypes, with ghost text or the completion menu.
function M.setup(opts)
  opts = options(opts)
  if vim.fn.has('nvim-0.11') == 1 then
    vim.lsp.config(M.name, M.config(opts))
    vim.lsp.enable(M.name)
    return
  end
  local group = vim.api.nvim_create_augroup('cl_lsp', { clear = true })
  vim.api.nvim_create_autocmd('FileType', {
    group = group,
    pattern = opts.filetypes,
    callback = function(event)
      start_legacy(event.buf, opts)
    end,
  })
  -- Buffers opened before setup() ran.
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
    local filetype = vim.bo[bufnr].filetype
    if vim.api.nvim_buf_is_loaded(bufnr) and vim.tbl_contains(opts.filetypes, filetype) then
      start_legacy(bufnr, opts)
    end
  end
end

--- For the require('lspconfig') framework (nvim-lspconfig before Neovim 0.11): register cl_lsp
--- as a custom server and set it up. `opts` as for setup().
function M.lspconfig(opts)
  opts = options(opts)
  local configs = require('lspconfig.configs')
  local util = require('lspconfig.util')
  if not configs[M.name] then
    configs[M.name] = {
      default_config = {
        cmd = opts.cmd,
        filetypes = opts.filetypes,
        root_dir = util.root_pattern(unpack(opts.root_markers)),
        single_file_support = true,
      },
      docs = { description = 'cl-lsp: Code Llama completions and code actions.' },
    }
  end
  require('lspconfig')[M.name].setup({
    init_options = opts.init_options,
    on_attach = function(client, bufnr)
      M.attach(client, bufnr, opts)
    end,
  })
end

return M
