# frozen_string_literal: true

require_relative "test_helper"

# The front's figures: Nightmare.stats, written once a second beside the
# workers' private socket and read in the master and its workers, and the
# status page (status_path) the front answers itself.
class StatsTest < Minitest::Test
  include HttpHelpers

  def setup
    @server = UnicornServer.new(workers: 1, nightmare: "in_flight_per_worker: 1",
                                config: 'status_path "/_nightmare"').start
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

  def test_the_status_page_shows_queued_requests_while_the_only_worker_is_busy
    @clients = [Thread.new { get(hold(4), {}, timeout: 20) }]
    @server.wait_until("the worker inside the held request", 5) { held_worker }
    @clients += Array.new(2) { Thread.new { get("/", {}, timeout: 20) } }
    page = nil
    @server.wait_until("two requests queued, as the page says", 5) do
      (page = get("/_nightmare")).status == 200 && page.json["queued"] == 2
    end
    assert_equal "application/json", page.headers["content-type"]
    figures = page.json
    assert_equal 1, figures["in_flight"]
    assert_operator figures["accepted"], :>=, 4, "every connection so far, this one too"
    assert_operator figures["open_connections"], :>=, 3
    %w[reading writing waiting requests requests_handed_off temp_file_bytes responses_2xx].each do |name|
      assert_kind_of Integer, figures[name], name
    end
    @server.wait_until("a tick that counted them", 5) { get("/_nightmare").json["writing"] >= 3 }

    nginx = get("/_nightmare?format=nginx")
    assert_equal "text/plain", nginx.headers["content-type"]
    assert_match(/\AActive connections: \d+\nserver accepts handled requests\n \d+ \d+ \d+\nReading: \d+ Writing: \d+ Waiting: \d+\n\z/,
                 nginx.body)
    head = raw_request("HEAD /_nightmare HTTP/1.1\r\nHost: t\r\n\r\n")
    assert_equal [200, ""], [head.status, head.body]
    assert(@clients.map(&:value).all? { |response| response.status == 200 })
  end

  def test_the_status_page_is_refused_to_other_addresses_and_never_reaches_the_app
    before = Integer(get("/count").body)
    refused = get("/_nightmare", {}, bind: "127.0.0.9")
    assert_equal 403, refused.status
    assert_equal "403 Forbidden: the front's status page is open only to the addresses status_path allows, " \
                 "not to this one\n", refused.body
    assert_equal 200, get("/_nightmare").status
    post = raw_request("POST /_nightmare HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
    assert_equal [405, "GET, HEAD"], [post.status, post.headers["allow"]]
    assert_match(/\A405 Method Not Allowed: /, post.body)
    assert_equal before + 1, Integer(get("/count").body), "the front answered them all itself"
    @server.wait_until("the refusal logged", 5) do
      @server.log.include?("client 127.0.0.9: the front's status page is open only to the addresses " \
                           "status_path allows, not to this one; answered 403")
    end
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
