//! The reference tutorial's own words and code, verbatim: the Python each
//! topic runs again in Rust, with its Chinese strings and the output it
//! states (in its comments). Copied line for line from the reference (the
//! first article of `/work/shared/reference/`, "详解python网络进程"), trailing
//! spaces included; the topics print them and say where the reference is
//! wrong.

/// §2: the process states and the STAT column (text, no code).
pub(crate) const STATES: &str = r##"1、三态

  • 就绪态:进程具备执行条件,等待系统分配CPU
  • 运行态:进程占有CPU处理器,处于运行状态
  • 等待态:进程暂时不具备运行条件,需要阻塞等待,让出CPU

2、五态(增加新建态和终止态)

  • 新建态:创建一个新的进程,获取资源的过程
  • 终止态:进程结束释放资源的过程

查看进程树:pstree

查看父进程PID:ps -ajx

linux查看进程命令:ps -aux

有一列为STAT为进程的状态

  • D 等待态 (不可中断等待)(阻塞)
  • S 等待态 (可中断等待)(睡眠)
  • T 等待态 (暂停状态)
  • R 运行态 (就绪态运行态)
  • Z 僵尸态
  • + 前台进程(能在终端显示出现象的)
  • < 高优先级
  • N 低优先级
  • l 有多线程的
  • s 会话组组长"##;

/// §3: the first os.fork example.
pub(crate) const FORK: &str = r##"import  os
from time import sleep

pid = os.fork()

if pid < 0:
    print("创建进程失败")

#子进程执行部分
elif pid == 0:
    print("新进程创建成功")

#父进程执行部分
else:
    sleep(1)
    print("原来的进程")

print("程序执行完毕")

# 新进程创建成功
# 原来的进程
# 程序执行完毕"##;

/// §3: 父子进程的变量域, each process's variables.
pub(crate) const FORK_VARIABLES: &str = r##"import os
from time import sleep 

a = 1
pid = os.fork()
if pid < 0:
    print("创建进程失败")
elif pid == 0:
    print("子进程")
    print("a = ",a)
    a = 10000
    print("a = ",a)
else:
    sleep(1)
    print("父进程")
    print("parent a :",a)    # a = 1

# 子进程
# a =  1
# a =  10000
# 父进程
# parent a : 1"##;

/// §3.1: os.getpid() and os.getppid().
pub(crate) const PIDS: &str = r##"import os

pid = os.fork()

if pid < 0:
  print("Error")
elif pid == 0:
  print("Child PID:", os.getpid())       # 26537
  print("Get parent PID:", os.getppid()) # 26536
else:
  print("Get child PID:", pid)           # 26537
  print("Parent PID:", os.getpid())      # 26536"##;

/// §3.1: os._exit and sys.exit.
pub(crate) const EXIT: &str = r##"import os,sys

# os._exit(0)                 # 退出进程
try:
    sys.exit("退出")
except SystemExit as e:
    print("退出原因:",e)    # 退出原因: 退出"##;

/// §4.1: orphans (text, no code).
pub(crate) const ORPHAN: &str = r##"父进程先于子进程退出,此时子进程就会变成孤儿进程

孤儿进程会被系统指定的进程收养,即系统进程会成为该孤儿进程新的父进程。孤儿进程退出时该父进程会处理退出状态"##;

/// §4.2: zombies (text, no code).
pub(crate) const ZOMBIE: &str = r##"子进程先与父进程退出,父进程没有处理子进程退出状态,此时子进程成为僵尸进程

僵尸进程已经结束,但是会滞留部分PCB信息在内存,大量的僵尸会消耗系统资源,应该尽量避免"##;

/// §4.3: os.wait().
pub(crate) const WAIT: &str = r##"import os, sys

pid = os.fork()

if pid < 0:
  print("Error")
elif pid == 0:
  print("Child process", os.getpid())   # Child process 27248
  sys.exit(1)
else:
  pid, status = os.wait()     # 阻塞等待子进程退出
  print("pid : ", pid)        # pid :  27248
  # 还原退出状态
  print("status:", os.WEXITSTATUS(status))      # status: 1
  while True:
    pass"##;

/// §4.3: 创建二级子进程, the second-level child.
pub(crate) const DOUBLE_FORK: &str = r##"import os
from time import sleep

def fun1():
    sleep(3)
    print("第一件事情")

def fun2():
    sleep(4)
    print("第二件事情")

pid = os.fork()

if pid < 0:
    print("Create process error")
elif pid == 0:          # 子进程
    pid0 = os.fork()    # 创建二级进程
    if pid0 < 0:
        print("创建二级进程失败")
    elif pid0 == 0:     # 二级子进程
        fun2()          # 做第二件事
    else:               # 二级进程
        os._exit(0)     # 二级进程退出
else:
    os.wait()
    fun1()              # 做第一件事

# 第一件事情
# 第二件事情"##;

/// §4.3: 通过信号处理子进程退出, ignoring SIGCHLD.
pub(crate) const SIGCHLD: &str = r##"import signal

signal.signal(signal.SIGCHLD,signal.SIG_IGN)

特点 : 非阻塞,不会影响父进程运行。可以处理所有子进程退出"##;

/// §5: multiprocessing的注意事项, its notes on multiprocessing (text).
pub(crate) const PROCESS_NOTES: &str = r##"  • 使用multiprocessing创建进程子进程同样复制父进程的全部内存空间,之后有自己独立的空间,执行上互不干扰
  • 如果不使用join回收可能会产生僵尸进程
  • 一般父进程功能就是创建子进程回收子进程,所有事件交给子进程完成
  • multiprocessing创建的子进程无法使用ptint"##;

/// §5.1: the attributes of a Process (text).
pub(crate) const PROCESS_ATTRS: &str = r##"p.name :进程名称

p.pid :对应子进程的PID号

p.is_alive():查看子进程是否在生命周期

p.daemon: 设置父子进程的退出关系

如果等于True则子进程会随父进程的退出而结束,就不用使用 join(),必须要求在start()前设置"##;

/// §5: multiprocessing.Process.
pub(crate) const PROCESS: &str = r##"import multiprocessing as mp
from time import sleep
import os

a = 1

def fun():
    sleep(2)
    print("子进程事件",os.getpid())
    global a
    a = 10000
    print("a = ",a)

p = mp.Process(target = fun)    # 创建进程对象
p.start()   # 启动进程
sleep(3)
print("这是父进程")
p.join()    # 回收进程
print("parent a:",a)

# 子进程事件 5434
# a =  10000
# 这是父进程
# parent a: 1"##;

/// §7.1: Pipe.
pub(crate) const PIPE: &str = r##"from multiprocessing import Pipe, Process

fd1, fd2 = Pipe()   # 创建管道,默认双向管道
def fun1():
  data = fd1.recv()     # 从管道获取消息
  print("管道2传给管道1的数据", data)
  inpu = "跟你说句悄悄话"
  fd1.send(inpu)

def fun2():
  fd2.send("肥水不流外人天")
  data = fd2.recv()
  print("管道1传给管道2的数据", data)

p1 = Process(target=fun1)
P2 = Process(target=fun2)

p1.start()
P2.start()

p1.join()
P2.join()
# 管道2传给管道1的数据 肥水不流外人天
# 管道1传给管道2的数据 跟你说句悄悄话"##;

/// §7.3: Value, the monthly balance.
pub(crate) const VALUE: &str = r##"from multiprocessing import Process,Value
import time
from random import randint

# 创建共享内存
money = Value('i', 5000)

#  修改共享内存
def man():
  for i in range(30):
    time.sleep(0.2)
    money.value += randint(1, 1000)

def girl():
  for i in range(30):
    time.sleep(0.15)
    money.value -= randint(100, 800)

m = Process(target=man)
g = Process(target=girl)
m.start()
g.start()
m.join()
g.join()

print("一月余额:", money.value)   # 获取共享内存值
# 一月余额: 4264"##;

/// §7.3: Array.
pub(crate) const ARRAY: &str = r##"from multiprocessing import Process, Array

# 创建共享内存
# shm = Array('i',[1,2,3])
# shm = Array('i',3)  # 表示开辟三个空间的列表
shm = Array('c',b"hello") #字节串

def fun():
  # 共享内存对象可迭代
  for i in shm:
    print(i)
  shm[0] = b'H'

p = Process(target=fun)
p.start()
p.join()

for i in shm:   # 子进程修改,父进程中也跟着修改
  print(i)

print(shm.value) # 打印字节串 b'Hello'"##;

/// §7.4: Semaphore.
pub(crate) const SEMAPHORE: &str = r##"from multiprocessing import Process, Semaphore

sem = Semaphore(3)    # 创建信号量,最多允许3个任务同时执行

def rnewu():
  sem.acquire()   # 每执行一次减少一个信号量
  print("执行任务.....执行完成")
  sem.release()   # 执行完成后增加信号量

for i in range(3):  # 有3个人想要执行任务
  p = Process(target=rnewu)
  p.start()
  p.join()"##;

/// A linked topic (the reference's list of related articles): "python 实现多进程日志轮转ConcurrentLogHandler",
/// its opening words as the reference shows them (cut off mid-sentence there).
pub(crate) const LOG_ROTATION: &str = r##"python 实现多进程日志轮转ConcurrentLogHandler

记录日志是我们程序中必不可少的一个功能,但是日志文件如果没有合理的管理,时间长了几百兆的日志文件就很难分析了(都不想打开看),但是又不可能经常手动去管理它 日志轮转:根据时间或者文件大小控制日志的文件个数,不用我们手动管理 python中logging模块内置的有几个支持日志轮转的handler 常用的有TimedRotatingFileHandler根据时间轮转 RotatingFileHandler根据文件大小轮转 但是内置的这些handler是多线程安全的,而不支持多进程(可以修改源码加锁"##;
