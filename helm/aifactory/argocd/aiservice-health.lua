-- Argo CD health check for aifactory.io/AIService (resource.customizations.health.aifactory.io_AIService).
-- Argo CD runs it with gopher-lua (Lua 5.1); `obj` is the live object. Keep it to plain Lua 5.1.
--
--   no status yet, or a spec change not yet observed  -> Progressing (the operator has not caught up)
--   pending, building, starting                       -> Progressing
--   running, completed                                -> Healthy
--   failed, cancelled, or Stalled=True                -> Degraded (a finished job is never restarted by
--                                                        itself: Git says "run", the cluster says "stopped")
--   a phase this script does not know                 -> Unknown
local hs = {}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function say(status, fallback)
  if status.message ~= nil and status.message ~= "" then
    return status.message
  end
  return fallback
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the aifactory operator to pick up the service"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on spec generation " .. tostring(generation)
  return hs
end

local phase = status.phase
local stalled = condition(status, "Stalled")
if phase == "failed" or phase == "cancelled" or (stalled ~= nil and stalled.status == "True") then
  hs.status = "Degraded"
  hs.message = say(status, "Service " .. phase)
  return hs
end

if phase == "running" then
  hs.status = "Healthy"
  if status.endpoint ~= nil then
    hs.message = "Running at " .. status.endpoint
  else
    hs.message = say(status, "Running")
  end
  return hs
end

if phase == "completed" then
  hs.status = "Healthy"
  hs.message = say(status, "Completed")
  return hs
end

if phase == "pending" or phase == "building" or phase == "starting" then
  hs.status = "Progressing"
  hs.message = say(status, "Service " .. phase)
  return hs
end

hs.status = "Unknown"
hs.message = "Unknown phase " .. tostring(phase)
return hs
