-- Drives a headless Neovim through one scenario against cl-lsp, like a person at the keyboard:
-- keys go in through nvim_input() and are handled by Neovim's own main loop, and the checks
-- read what the buffer (and the ghost text) show. Run by tests/test_editors.py:
--   nvim --headless --clean -c 'luafile tests/editors/neovim.lua'
-- with CL_SCENARIO, CL_FILE (the file to edit), CL_OPTIONS (JSON for setup()), CL_PLUGIN (the
-- editors/neovim folder) and CL_RESULT (where the JSON report goes) in the environment.
-- Works on Neovim 0.7 and 0.12: no API newer than 0.7 unless the scenario needs it.

local report = { steps = {} }
local scenario = os.getenv('CL_SCENARIO')

local function step(name, value)
  table.insert(report.steps, name)
  if value ~= nil then
    report[name] = value
  end
end

local function finish()
  local file = assert(io.open(os.getenv('CL_RESULT'), 'w'))
  file:write(vim.fn.json_encode(report))
  file:close()
  vim.cmd('qa!')
end

-- Coroutine helpers: yield to Neovim's main loop so it handles keys and LSP messages meanwhile.
local function sleep(ms)
  local co = coroutine.running()
  vim.defer_fn(function()
    coroutine.resume(co)
  end, ms)
  coroutine.yield()
end

local function wait_for(what, condition, timeout_ms)
  local waited = 0
  timeout_ms = timeout_ms or 30000
  while true do
    local value = condition()
    if value then
      return value
    end
    if waited >= timeout_ms then
      error('timed out waiting for ' .. what, 2)
    end
    sleep(20)
    waited = waited + 20
  end
end

local function request(client, method, params)
  local co = coroutine.running()
  local answer
  local function on_answer(err, result)
    answer = { err = err, result = result }
    coroutine.resume(co)
  end
  if vim.fn.has('nvim-0.11') == 1 then -- methods; before 0.11, functions in fields
    client:request(method, params, on_answer, vim.api.nvim_get_current_buf())
  else
    client.request(method, params, on_answer, vim.api.nvim_get_current_buf())
  end
  while not answer do
    coroutine.yield()
  end
  assert(not answer.err, vim.inspect(answer.err))
  return answer.result
end

local function cl_client()
  for _, client in pairs((vim.lsp.get_clients or vim.lsp.get_active_clients)()) do
    if client.name == 'cl_lsp' then
      return client
    end
  end
end

local function server_status(client)
  return request(client, 'workspace/executeCommand', { command = 'cl-lsp.status' })
end

local function lines()
  return vim.api.nvim_buf_get_lines(0, 0, -1, false)
end

-- Open the file, let the config start the server, wait until the model is loaded.
local function open_and_attach()
  vim.opt.runtimepath:prepend(os.getenv('CL_PLUGIN'))
  require('cl_lsp').setup(vim.fn.json_decode(os.getenv('CL_OPTIONS')))
  vim.cmd('edit ' .. vim.fn.fnameescape(os.getenv('CL_FILE')))
  local client = wait_for('cl_lsp to attach', function()
    local found = cl_client()
    return found and found.initialized and found
  end)
  step('attached')
  wait_for('the model', function()
    local status = server_status(client)
    return status.state == 'ready' and not status.loading
  end)
  step('ready')
  return client
end

local scenarios = {}

-- The completion menu is open (or opening): note its words, take the first, note the buffer.
local function accept_from_menu()
  local items = wait_for('the completion menu', function()
    local info = vim.fn.complete_info({ 'items' })
    return #info.items > 0 and info.items
  end)
  step('menu', vim.tbl_map(function(item)
    return item.word
  end, items))
  vim.api.nvim_input('<C-y><Esc>')
  wait_for('normal mode', function()
    return vim.api.nvim_get_mode().mode == 'n'
  end)
  step('lines', lines())
end

-- Neovim 0.7-0.10: the completion menu through 'omnifunc', opened with <C-x><C-o>.
function scenarios.omnifunc()
  open_and_attach()
  step('omnifunc', vim.bo.omnifunc)
  vim.api.nvim_input('G$a<C-x><C-o>')
  accept_from_menu()
end

-- Neovim 0.11+ without ghost text: vim.lsp.completion opens the menu after a trigger character.
function scenarios.autotrigger()
  local client = open_and_attach()
  vim.api.nvim_input('G$a(')
  accept_from_menu()
  wait_for('the accept command', function()
    return server_status(client).accepted > 0
  end, 10000)
  step('accepted', server_status(client).accepted)
end

-- A multi-line suggestion taken from the completion menu lands as lines (the menu itself can
-- only insert one line). The item is made here, in the shape the server sends; the models the
-- tests use never write a newline.
function scenarios.multiline()
  local client = open_and_attach()
  local item = {
    label = 'if a:',
    textEdit = {
      newText = 'if a:\n        return b',
      range = { start = { line = 1, character = 4 }, ['end'] = { line = 1, character = 4 } },
    },
    command = { title = 'cl-lsp: accepted', command = 'cl-lsp.accept', arguments = {} },
  }
  _G.cl_lsp_offer = function()
    vim.fn.complete(5, { {
      word = vim.fn.has('nvim-0.11') == 1 and 'if a:' or item.textEdit.newText,
      user_data = { nvim = { lsp = { completion_item = item, client_id = client.id } } },
    } })
    return ''
  end
  vim.api.nvim_set_keymap('i', '<F5>', '<C-r>=v:lua.cl_lsp_offer()<CR>', { noremap = true })
  vim.api.nvim_win_set_cursor(0, { 2, 0 })
  vim.api.nvim_input('A<F5>')
  wait_for('the completion menu', function()
    return #vim.fn.complete_info({ 'items' }).items > 0
  end)
  vim.api.nvim_input('<C-y>')
  wait_for('the lines', function()
    return #lines() == 3
  end, 5000)
  step('cursor', vim.api.nvim_win_get_cursor(0))
  vim.api.nvim_input('<Esc>')
  step('lines', lines())
end

-- Neovim 0.12+: ghost text while typing, accepted with the configured key.
function scenarios.inline()
  local client = open_and_attach()
  local namespace = vim.api.nvim_create_namespace('nvim.lsp.inline_completion')
  local function ghost()
    local marks = vim.api.nvim_buf_get_extmarks(0, namespace, 0, -1, { details = true })
    if #marks == 0 or not marks[1][4].virt_text then
      return nil
    end
    local text = {}
    for _, chunk in ipairs(marks[1][4].virt_text) do
      table.insert(text, chunk[1])
    end
    return table.concat(text)
  end

  vim.api.nvim_input('Govalue =')
  step('ghost', wait_for('ghost text', ghost))
  -- Type what the ghost text starts with: the server answers from the shown suggestion.
  local shown = #server_status(client).recent
  vim.api.nvim_input(report.ghost:sub(1, 2))
  wait_for('the typed-ahead answer', function()
    return #server_status(client).recent > shown
  end)
  sleep(100) -- let Neovim draw the new answer
  step('ghost_after_typing', ghost())
  vim.api.nvim_input('<Tab>')
  wait_for('the ghost text to be taken', function()
    return ghost() == nil and vim.api.nvim_get_current_line() ~= 'value =' .. report.ghost:sub(1, 2)
  end)
  vim.api.nvim_input('<Esc>')
  wait_for('normal mode', function()
    return vim.api.nvim_get_mode().mode == 'n'
  end)
  step('lines', lines())
  wait_for('the accept command', function()
    return server_status(client).accepted > 0
  end, 10000)
  local status = server_status(client)
  step('accepted', status.accepted)
  step('generations', status.counters.generationsStarted)
  step('outcomes', vim.tbl_map(function(record)
    return record.outcome
  end, status.recent))
end

-- Code actions on every version: pick "Explain" from vim.lsp.buf.code_action()'s menu.
function scenarios.code_action()
  local client = open_and_attach()
  local titles = {}
  vim.ui.select = function(items, opts, on_choice)
    local chosen
    for _, item in ipairs(items) do
      local action = item[2] or item.action -- 0.7: {client_id, action}; later: {ctx, action}
      table.insert(titles, action.title)
      if action.title:find('^cl%-lsp: Explain') then
        chosen = item
      end
    end
    on_choice(chosen)
  end
  local before = lines()
  vim.api.nvim_win_set_cursor(0, { 2, 4 })
  vim.lsp.buf.code_action()
  wait_for('the edit', function()
    return #lines() > #before
  end, 60000)
  step('titles', titles)
  step('lines', lines())
  local actions = server_status(client).actions
  step('action', actions[#actions])
end

coroutine.wrap(function()
  local ok, err = xpcall(scenarios[scenario], debug.traceback)
  report.ok = ok
  report.error = err
  report.version = vim.version()
  finish()
end)()
