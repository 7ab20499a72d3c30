-- spool_spec.lua: the on-disk spool (src/spool.c) on a really full filesystem.
-- Test side: mounts a 256 KiB tmpfs (needs root, as CI runs), runs `test_spool --enospc DIR`
-- (spec/c/test_spool.c): appends until ENOSPC, keeps appending (refused, one error line),
-- reads everything back intact, frees space by acknowledging, and checks spooling resumes.
local stack = require("spec.runtime.stack")
local q = stack.quote

describe("spool on a full disk (tmpfs)", function()
  local mnt
  teardown(function()
    if mnt then os.execute("umount " .. q(mnt) .. " 2>/dev/null") end
    stack.cleanup_all()
  end)

  it("refuses appends with one error, loses nothing written, resumes when space returns #asan", function()
    local rc, uid = stack.run("id -u")
    assert(rc == 0)
    assert(uid:match("^0"), "this test mounts a tmpfs and must run as root (CI does)")
    mnt = stack.tmpdir() .. "/full"
    assert(os.execute("mkdir -p " .. q(mnt)))
    local mrc = stack.run("mount -t tmpfs -o size=256k tmpfs " .. q(mnt))
    assert.are.equal(0, mrc, "mount -t tmpfs failed")
    local code, out, err = stack.run(q(stack.bin("test_spool")) .. " --enospc " .. q(mnt .. "/spool"), { timeout = 60 })
    print(out)
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:match("records stored before the disk was full"))
    assert.truthy(out:match("0 failed"))
  end)
end)
