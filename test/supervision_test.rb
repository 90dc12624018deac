# frozen_string_literal: true

require_relative "test_helper"

# The master looks after the front as it looks after workers.
class SupervisionTest < Minitest::Test
  include TwoWorkerServer

  def test_killed_front_is_replaced_and_clients_wait_in_the_backlog
    old_front = @server.front_pid
    assert_equal 200, get("/").status
    Process.kill(:KILL, old_front)
    # Connected while no front runs: the kernel's backlog holds the client.
    response = get("/", {}, timeout: 15)
    assert_equal 200, response.status
    new_front = @server.front_pid
    refute_nil new_front
    refute_equal old_front, new_front
    assert_match(/nightmare front died: .*pid #{old_front} SIGKILL.*starting a new one/, @server.log)
    @server.wait_until("the new front's ready line", 5) { @server.log.scan("nightmare front ready").size == 2 }
    refute_match(/worker=unknown/, @server.log, "the front's death is not reported as a worker's")
  end

  def test_a_worker_respawned_while_the_front_restarts_still_goes_through_the_front
    # A front that dies within a second of starting is restarted after a
    # pause; a worker forked in that pause must not serve the listeners.
    Process.kill(:KILL, @server.front_pid)
    @server.wait_until("a fresh front", 10) { @server.log.scan("nightmare front ready").size == 2 }
    front = @server.front_pid # less than a second old: its death counts as quick
    old_worker = @server.worker_pids.first
    Process.kill(:KILL, front)
    Process.kill(:KILL, old_worker)
    @server.wait_until("the worker's replacement", 10) do
      @server.worker_pids.size == 2 && !@server.worker_pids.include?(old_worker)
    end
    @server.worker_pids.each do |worker|
      assert_equal 0, listening_sockets(worker), "worker #{worker} holds a public listener"
    end
    @server.wait_until("the new front", 10) { @server.front_pid && @server.front_pid != front }
    assert_equal 200, get("/").status
  end

  def test_front_and_workers_exit_when_their_master_is_gone
    front = @server.front_pid
    workers = @server.worker_pids
    Process.kill(:KILL, @server.pid)
    Process.waitpid(@server.pid)
    @server.wait_until("front to exit after its master", 10) { !File.exist?("/proc/#{front}") }
    # Unicorn's workers notice too (their pipe from the master closes): the
    # front must not be holding that pipe open.
    running = -> { workers.select { |pid| File.exist?("/proc/#{pid}") && !File.read("/proc/#{pid}/stat").include?(") Z ") } }
    @server.wait_until("workers to exit after their master", 30) { running.call.empty? }
    refute File.exist?("/proc/#{front}"), "the front is gone"
    assert_empty running.call, "the workers are gone"
  ensure
    workers&.each { |pid| Process.kill(:KILL, pid) rescue nil } # rubocop:disable Style/RescueModifier
  end

  def listening_sockets(pid)
    listening = File.readlines("/proc/net/tcp").filter_map { |line| (f = line.split)[3] == "0A" && f[9] }
    Dir.glob("/proc/#{pid}/fd/*").count do |fd|
      listening.include?(File.readlink(fd)[/\Asocket:\[(\d+)\]\z/, 1])
    rescue Errno::ENOENT
      false
    end
  end

  def test_front_logs_through_unicorns_logger
    log = @server.log
    assert_match(/INFO -- : nightmare front spawned pid=\d+/, log)
    assert_match(/INFO -- : nightmare front ready: \d+ threads on 127\.0\.0\.1:#{@server.port}, 2 workers/, log)
  end
end
