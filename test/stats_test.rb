# frozen_string_literal: true

require_relative "test_helper"

# Nightmare.stats: the front's figures, written once a second beside the
# workers' private socket, read in the master and its workers.
class StatsTest < Minitest::Test
  include HttpHelpers

  def setup
    @server = UnicornServer.new(workers: 1, nightmare: "in_flight_per_worker: 1").start
  end

  def teardown
    @clients&.each(&:kill)
    @server.stop
  end

  def test_a_worker_reads_the_fronts_figures
    3.times { assert_equal 200, get("/").status }
    assert_equal 400, raw_request("NONSENSE\r\n\r\n").status
    stats = nil
    @server.wait_until("figures that count the requests", 5) do
      (stats = get("/nightmare_stats").json) && stats["requests_handed_off"].to_i >= 3 && stats["responses_4xx"] == 1
    end
    assert_operator stats["responses_2xx"], :>=, 3
    assert_equal 0, stats["responses_5xx"]
    assert_equal 1, stats["workers"]
    assert_kind_of Integer, stats["open_connections"]
    assert_in_delta Time.now.to_f, stats["updated_at"], 3, "at most a second or so old"
    assert_equal @server.front_pid, stats["pid"]
    assert_operator stats["temp_path_max_size"], :>, 0, "half of the free space by default"
  end

  def test_requests_waiting_for_a_busy_worker_show_as_queued
    @clients = [Thread.new { get(hold(4), {}, timeout: 20) }]
    @server.wait_until("the worker inside the held request", 5) { held_worker }
    @clients += Array.new(3) { Thread.new { get("/", {}, timeout: 20) } }
    figures = nil
    @server.wait_until("three requests queued in the front", 5) do
      (figures = read_stats_file) && figures["queued"] == 3
    end
    assert_equal 1, figures["in_flight"], "the held one, at in_flight_per_worker"
    assert(@clients.map(&:value).all? { |response| response.status == 200 }, "all are served once the worker is free")
  end

  def test_the_file_goes_with_its_master
    @server.wait_until("the first figures", 5) { read_stats_file }
    path = stats_path
    @server.stop
    refute File.exist?(path), "#{path} removed when the master exits"
  end

  private

  def stats_path = @server.worker_socket.sub(/\.sock\z/, ".stats")

  def read_stats_file
    JSON.parse(File.read(stats_path))
  rescue Errno::ENOENT
    nil
  end
end
