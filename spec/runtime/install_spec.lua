-- Runtime spec (issue "Run it as a service"): `cmake --install` into a DESTDIR (prefix /usr
-- and /opt/tstats), an operator's config never overwritten, the systemd unit checked by
-- `systemd-analyze verify`, and the Debian package built by CPack, installed with dpkg,
-- run from its installed paths and removed. Test side, Lua + shell; uses the `build` tree.
local stack = require "spec.runtime.stack"

local q = stack.quote
local build = stack.build_dir()
if build:sub(1, 1) ~= "/" then build = stack.root() .. "/" .. build end

local function exists(p) return os.execute("test -e " .. q(p)) == true end
local function is_dir(p) return os.execute("test -d " .. q(p)) == true end
local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end
local function mode_of(p)
  local _, out = stack.run("stat -c %a " .. q(p))
  return out:gsub("%s+$", "")
end

local function install(destdir, prefix)
  local rc, out, err = stack.run("cmake --install " .. q(build) .. " --prefix " .. q(prefix),
    { env = { DESTDIR = destdir }, timeout = 120 })
  assert.are.equal(0, rc, out .. err)
  return out
end

-- The unit's directives as a multimap: key -> { values... }.
local function unit_keys(text)
  local keys = {}
  for line in text:gmatch("[^\n]+") do
    local k, v = line:match("^(%w+)=(.*)$")
    if k then
      keys[k] = keys[k] or {}
      table.insert(keys[k], v)
    end
  end
  return keys
end

-- systemd-analyze verify of a unit file; returns rc, everything it printed.
local function verify(path)
  local rc, out, err = stack.run("systemd-analyze verify --man=no " .. q(path), { timeout = 60 })
  return rc, (out .. err):gsub("%s+$", "")
end

describe("install layout", function()
  local tmp
  setup(function() tmp = stack.tmpdir() end)
  teardown(function() stack.cleanup_all() end)

  it("lays out binaries, /etc/tstats, stock Lua, examples, the unit and the state dir for prefix /usr", function()
    local d = tmp .. "/usr-root"
    local out = install(d, "/usr")
    for _, p in ipairs({
      "/usr/bin/tstats",
      "/etc/tstats/config.lua",
      "/etc/tstats/tstats.env",
      "/usr/share/tstats/lua/options.lua",
      "/usr/share/tstats/lua/mappings/cachestats.lua",
      "/usr/share/tstats/lua/rollups/daily.lua",
      "/usr/share/doc/tstats/examples/scripts/cdn_report.lua",
      "/usr/share/doc/tstats/examples/config.lua",
      "/usr/share/doc/tstats/README.md",
      "/usr/lib/systemd/system/tstats.service",
    }) do
      assert.is_true(exists(d .. p), p .. " installed")
    end
    assert.is_true(is_dir(d .. "/var/lib/tstats"), "state dir")
    assert.are.equal("755", mode_of(d .. "/usr/bin/tstats"))
    assert.are.equal("640", mode_of(d .. "/etc/tstats/tstats.env"), "secrets file not world-readable")
    assert.are.equal(stack.read_file(stack.root() .. "/config.lua"), stack.read_file(d .. "/etc/tstats/config.lua"))
    -- man pages: installed when the man page target made them, else a clear message
    local man = stack.run("ls " .. q(build .. "/man") .. " 2>/dev/null | grep -q '[.][1-9]$'") == 0
    if man then
      assert.is_true(exists(d .. "/usr/share/man/man1/tstats.1"), "tstats.1 installed")
      assert.is_true(exists(d .. "/usr/share/man/man5/tstats.conf.5"), "tstats.conf.5 installed")
    else
      assert.truthy(out:find("No man pages in", 1, true), out)
    end
    -- the installed binary runs from there and accepts the installed config
    local rc, vout = stack.run(q(d .. "/usr/bin/tstats") .. " --version")
    assert.are.equal(0, rc)
    assert.truthy(vout:match("^tstats %d+%.%d+%.%d+"), vout)
    local crc, _, cerr = stack.run(q(d .. "/usr/bin/tstats") .. " --config " .. q(d .. "/etc/tstats/config.lua") .. " check")
    assert.are.equal(0, crc, cerr)
  end)

  it("never overwrites an operator's config: the new default goes next to it as .dist", function()
    local d = tmp .. "/keep-root"
    install(d, "/usr")
    local mine = "-- mine\nreturn { traffic_ops = { url = 'https://to.example' }, influxdb = { urls = { 'http://i:8086' } } }\n"
    stack.write_file(d .. "/etc/tstats/config.lua", mine)
    stack.write_file(d .. "/etc/tstats/tstats.env", "TO_PASSWORD=secret\n")
    local out = install(d, "/usr")
    assert.truthy(out:find("Keeping: " .. d .. "/etc/tstats/config.lua", 1, true), out)
    assert.are.equal(mine, stack.read_file(d .. "/etc/tstats/config.lua"))
    assert.are.equal("TO_PASSWORD=secret\n", stack.read_file(d .. "/etc/tstats/tstats.env"))
    assert.are.equal(stack.read_file(stack.root() .. "/config.lua"), stack.read_file(d .. "/etc/tstats/config.lua.dist"))
  end)

  it("follows another prefix the GNU way (/opt/tstats: /etc/opt/tstats, /var/opt/tstats)", function()
    local d = tmp .. "/opt-root"
    install(d, "/opt/tstats")
    assert.is_true(exists(d .. "/opt/tstats/bin/tstats"))
    assert.is_true(exists(d .. "/etc/opt/tstats/tstats/config.lua"))
    assert.is_true(is_dir(d .. "/var/opt/tstats/lib/tstats"))
    local unit = stack.read_file(d .. "/opt/tstats/lib/systemd/system/tstats.service")
    assert.truthy(unit:find("ExecStart=/opt/tstats/bin/tstats --config /etc/opt/tstats/tstats/config.lua run", 1, true), unit)
  end)

  it("installs a unit that systemd-analyze verify accepts: notify, watchdog, reload, hardening", function()
    local d = tmp .. "/unit-root"
    install(d, "/usr")
    local text = stack.read_file(d .. "/usr/lib/systemd/system/tstats.service")
    local k = unit_keys(text)
    local function one(key) return k[key] and k[key][1] end
    assert.are.equal("notify", one("Type"))
    assert.are.equal("/usr/bin/tstats --config /etc/tstats/config.lua run", one("ExecStart"))
    assert.are.equal("/bin/kill -HUP $MAINPID", one("ExecReload"))
    assert.truthy(tonumber(one("WatchdogSec")) and tonumber(one("WatchdogSec")) > 0)
    assert.are.equal("tstats", one("User"))
    assert.are.equal("tstats", one("StateDirectory"))
    assert.are.equal("-/etc/tstats/tstats.env", one("EnvironmentFile"))
    assert.are.equal("yes", one("NoNewPrivileges"))
    assert.are.equal("strict", one("ProtectSystem"))
    assert.are.equal("yes", one("ProtectHome"))
    assert.are.equal("yes", one("PrivateTmp"))
    assert.are.equal("", one("CapabilityBoundingSet"))
    assert.truthy(one("ReadWritePaths"):find("/var/lib/tstats", 1, true))
    assert.are.equal("AF_UNIX AF_INET AF_INET6", one("RestrictAddressFamilies"))
    -- verify needs the ExecStart binary at its path: point it at the DESTDIR copy
    local copy = tmp .. "/verify/tstats.service"
    os.execute("mkdir -p " .. q(tmp .. "/verify"))
    stack.write_file(copy, (text:gsub("/usr/bin/tstats", d .. "/usr/bin/tstats")))
    local rc, said = verify(copy)
    assert.are.equal(0, rc, said)
    assert.are.equal("", said, "no warning from systemd-analyze verify")
    -- and the check can fail: a misspelt directive is reported
    stack.write_file(copy, (text:gsub("/usr/bin/tstats", d .. "/usr/bin/tstats"):gsub("Type=notify", "Type=notfy")))
    local _, bad = verify(copy)
    assert.truthy(bad:find("notfy", 1, true), "systemd-analyze reports the bad Type: " .. bad)
    -- exposure score of the hardening, as systemd computes it offline
    stack.write_file(copy, (text:gsub("/usr/bin/tstats", d .. "/usr/bin/tstats")))
    local _, sec = stack.run("systemd-analyze security --offline=true --man=no " .. q(copy) .. " 2>&1", { timeout = 60 })
    local score = tonumber(sec:match("Overall exposure level for tstats%.service: ([%d.]+)"))
    assert.truthy(score and score <= 4.0, "exposure level <= 4.0 (OK): " .. sec:sub(-300))
  end)
end)

local function is_root()
  local _, out = stack.run("id -u")
  return out:gsub("%s+", "") == "0"
end

describe("Debian package", function()
  local tmp
  setup(function() tmp = stack.tmpdir() end)
  teardown(function()
    -- never leave the package on the machine, whatever failed
    if is_root() then os.execute("flock /tmp/apt.lock dpkg --purge tstats >/dev/null 2>&1") end
    stack.cleanup_all()
  end)

  local deb
  it("is built by cpack -G DEB with the right Depends and conffiles", function()
    local rc, out, err = stack.run("cpack -G DEB -B " .. q(tmp .. "/pkg") .. " --config " .. q(build .. "/CPackConfig.cmake"),
      { timeout = 300, cwd = build })
    assert.are.equal(0, rc, out .. err)
    local _, found = stack.run("ls " .. q(tmp .. "/pkg") .. "/tstats_*_amd64.deb")
    deb = found:match("[^\n]+")
    assert.truthy(deb and exists(deb), "a .deb in " .. tmp .. "/pkg: " .. out)
    local _, depends = stack.run("dpkg-deb -f " .. q(deb) .. " Depends")
    for _, pkg in ipairs({ "lua-cjson", "adduser", "libcurl4", "liblua5.4-0", "libpq5", "libyajl2", "libsystemd0", "zlib1g" }) do
      assert.truthy(depends:find(pkg, 1, true), pkg .. " in Depends: " .. depends)
    end
    local ctl = tmp .. "/ctl"
    assert.are.equal(0, (stack.run("dpkg-deb -e " .. q(deb) .. " " .. q(ctl))))
    local conffiles = stack.read_file(ctl .. "/conffiles") or ""
    assert.truthy(conffiles:find("/etc/tstats/config.lua\n", 1, true), conffiles)
    assert.truthy(conffiles:find("/etc/tstats/tstats.env\n", 1, true), conffiles)
    assert.truthy((stack.read_file(ctl .. "/postinst") or ""):find("adduser --system", 1, true))
    local _, list = stack.run("dpkg-deb -c " .. q(deb))
    assert.truthy(list:find("./usr/bin/tstats", 1, true))
    assert.truthy(list:find("./usr/lib/systemd/system/tstats.service", 1, true))
  end)

  it("installs with dpkg -i, creates the tstats user, runs from the installed paths, keeps config on remove", function()
    if not is_root() then
      pending("dpkg -i needs root")
      return
    end
    assert.truthy(deb, "the previous test built the package")
    local function dpkg(args)
      local rc, out, err = stack.run("flock /tmp/apt.lock dpkg " .. args, { timeout = 120 })
      return rc, out .. err
    end
    local rc, out = dpkg("-i " .. q(deb))
    assert.are.equal(0, rc, out)
    local urc, uid = stack.run("id -u tstats")
    assert.are.equal(0, urc, "tstats user created")
    assert.truthy(tonumber(uid) and tonumber(uid) > 0 and tonumber(uid) < 1000, "a system user: " .. uid)
    local _, owner = stack.run("stat -c %U:%G /var/lib/tstats")
    assert.are.equal("tstats:tstats", trim(owner))
    local _, envown = stack.run("stat -c %U:%G:%a /etc/tstats/tstats.env")
    assert.are.equal("root:tstats:640", trim(envown))
    local vrc, ver = stack.run("/usr/bin/tstats --version")
    assert.are.equal(0, vrc)
    assert.truthy(ver:match("^tstats %d+%.%d+%.%d+"), ver)
    local crc, cout, cerr = stack.run("/usr/bin/tstats --config /etc/tstats/config.lua check")
    assert.are.equal(0, crc, cerr)
    assert.truthy((cout .. cerr):find("is valid", 1, true))
    -- the check as the service user, the way systemd runs it
    local src = stack.run("runuser -u tstats -- /usr/bin/tstats --config /etc/tstats/config.lua check >/dev/null")
    assert.are.equal(0, src)
    local vr, said = verify("/usr/lib/systemd/system/tstats.service")
    assert.are.equal(0, vr, said)
    assert.are.equal("", said)
    -- an operator's edit survives a reinstall and a remove (conffile)
    local mine = "-- edited by the operator\n" .. stack.read_file("/etc/tstats/config.lua")
    stack.write_file("/etc/tstats/config.lua", mine)
    rc, out = dpkg("-i " .. q(deb))
    assert.are.equal(0, rc, out)
    assert.are.equal(mine, stack.read_file("/etc/tstats/config.lua"))
    rc, out = dpkg("-r tstats")
    assert.are.equal(0, rc, out)
    assert.is_false(exists("/usr/bin/tstats"), "binary removed")
    assert.are.equal(mine, stack.read_file("/etc/tstats/config.lua"), "config kept on remove")
    rc, out = dpkg("--purge tstats")
    assert.are.equal(0, rc, out)
    assert.is_false(exists("/etc/tstats/config.lua"), "config gone on purge")
    assert.is_false(exists("/var/lib/tstats"), "state gone on purge")
  end)
end)
