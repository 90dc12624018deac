# frozen_string_literal: true

require_relative "test_helper"

# USR2: a binary upgrade (USR2, then QUIT to the old master) loses no
# request, and neither does backing out of one.
class UpgradeTest < Minitest::Test
  include TwoWorkerServer

  def test_usr2_then_quit_of_the_old_master_loses_nothing
    old_master = @server.pid
    new_master = nil
    served, failures = with_steady_clients do |served_more|
      Process.kill(:USR2, old_master)
      new_master = @server.wait_for_new_master(old_master, workers: 2)
      served_more.call(20) # both generations serve
      Process.kill(:QUIT, old_master)
      Timeout.timeout(30) { Process.waitpid(old_master) }
      @server.adopt(new_master)
    end
    assert_operator served, :>, 20, "clients kept coming through the upgrade"
    assert_equal 0, failures, "no request failed during USR2, the overlap and QUIT"
    assert_equal 200, get("/").status, "the new generation serves alone"
  end
end

# Backing out of an upgrade (QUIT to the new master) keeps the old one serving.
class UpgradeBackOutTest < Minitest::Test
  include TwoWorkerServer

  def test_quitting_the_new_master_keeps_the_old_one_serving
    old_master = @server.pid
    pid_file = File.join(@server.dir, "unicorn.pid")
    served, failures = with_steady_clients do
      Process.kill(:USR2, old_master)
      new_master = @server.wait_for_new_master(old_master, workers: 0)
      Process.kill(:QUIT, new_master)
      @server.wait_until("the new master to exit", 30) { !File.exist?("/proc/#{new_master}") }
    end
    assert_operator served, :>, 10
    assert_equal 0, failures, "no request failed while backing out"
    @server.wait_until("the old pid file to come back", 10) { File.exist?(pid_file) && File.read(pid_file).to_i == old_master }
    assert_equal 200, get("/").status
  end
end
