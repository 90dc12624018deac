# frozen_string_literal: true

require_relative "test_helper"
require "open3"

# error_page: a browser gets the site's own page for the 502, 503 and 504
# the front answers itself; HEAD, curl-like clients and the app's own 5xx
# are left as they were.
class ErrorPagesTest < Minitest::Test
  include HttpHelpers
  include ConfigRefusals

  BROWSER = { "Accept" => "text/html,application/xhtml+xml,*/*;q=0.8" }.freeze

  def setup
    @dir = Dir.mktmpdir("nightmare-error-pages")
    @public = File.join(@dir, "public")
    FileUtils.mkdir_p(@public)
    @page = File.join(@dir, "5xx.html")
    File.write(@page, "<h1>Back soon</h1>\n")
  end

  def teardown
    @server&.stop
    FileUtils.rm_rf(@dir)
  end

  # A 300 ms upstream_read_timeout: /sleep?1 gets the front's own 504
  # (and keeps its worker a second).
  def start(config)
    @server = UnicornServer.new(workers: 4, nightmare: 'upstream_read_timeout: "300ms"', config: config).start
  end

  def content_type(response) = response.headers.find { |name, _| name.casecmp?("content-type") }&.last.to_s

  def test_a_browser_gets_the_sites_page_with_the_fronts_status_and_others_the_plain_reply
    start("error_page 502, 503, 504, #{@page.inspect}")
    page = get("/sleep?1", BROWSER)
    assert_equal [504, "<h1>Back soon</h1>\n"], [page.status, page.body]
    assert_match(%r{\Atext/html}, content_type(page))
    plain = get("/sleep?1")
    assert_equal 504, plain.status
    assert_match(%r{\Atext/plain}, content_type(plain), "no Accept: the plain reply")
    refute_includes plain.body, "Back soon"
    head = raw_request("HEAD /sleep?1 HTTP/1.1\r\nHost: test\r\nAccept: text/html\r\n\r\n")
    assert_equal 504, head.status
    assert_match(%r{\Atext/plain}, content_type(head), "HEAD: the plain reply")
    # Three workers still sleep; the fourth answers at once.
    own = get("/app_error", BROWSER)
    assert_equal [503, "the app's own 503\n"], [own.status, own.body], "the app's own 5xx passes untouched"
  end

  def test_the_try_files_roots_page_serves_when_none_is_given
    File.write(File.join(@public, "504.html"), "<p>504 from public</p>\n")
    start("try_files #{@public.inspect}")
    page = get("/sleep?1", BROWSER)
    assert_equal [504, "<p>504 from public</p>\n"], [page.status, page.body]
  end

  def test_config_errors_name_the_directive
    {
      "nightmare true\nerror_page 404, #{@page.inspect}" => /error_page 404: the front answers only 502, 503 and 504/,
      "nightmare true\nerror_page 502, '#{@dir}/missing.html'" => %r{error_page #{@dir}/missing.html: cannot be read},
      "nightmare true\nerror_page #{@page.inspect}" => /error_page needs statuses and a file/,
      "error_page 502, #{@page.inspect}" => /error_page needs the front/,
    }.then { |refusals| assert_configs_refused(@dir, refusals) }
  end
end
